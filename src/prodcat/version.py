"""prodcat's version, in a module of its own: any layer may name it without importing the
package's public face (`prodcat.Classifier` loads the serving layer on demand)."""

__version__ = "0.1.0"
