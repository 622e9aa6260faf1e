"""linearcnn: what does the first layer of a CNN learn, and why?"""

__version__ = "0.1.0"
