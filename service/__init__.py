"""OligoCDS: decision support for skeletal metastases and oligometastatic disease."""

__version__ = "0.1.0"
