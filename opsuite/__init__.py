"""opsuite: operator-coverage suite and compatibility matrix for AWS Neuron."""
__version__ = "0.1.0"
