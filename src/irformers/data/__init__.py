"""Image I/O, MATLAB-exact resizing, degradations and benchmark datasets."""
