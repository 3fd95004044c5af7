"""The data contract, FlowIO.py's conversion, and the input pipeline that
reads the records back."""
