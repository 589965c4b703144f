"""tuner-service: distributed Keras hyperparameter tuning on Kubernetes."""

__version__ = "0.1.0"
