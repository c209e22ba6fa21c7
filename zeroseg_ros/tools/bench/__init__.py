"""``zeroseg bench``: measuring (measure, naive, ros_e2e), reporting (report, plot) and its options (cli)."""
