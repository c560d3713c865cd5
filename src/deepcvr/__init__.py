"""deepcvr: Ali-CCP from archives to a verified third-normal-form database."""

__version__ = "0.1.0"
