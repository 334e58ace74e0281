"""The strategy compiler (design time): drawings, tools, the model loop, versioning. Never imported at run time."""
