"""``zeroseg label``: labels recorded rosbag2 bags with the node's outputs, in this process or on a Ray cluster
(``bags``: reading and writing bags; ``outputs``: the node's messages; ``labeller``: one model's pipeline;
``manifest``: finished bags; ``job``: plans and the local run; ``ray_job``: the run on Ray; ``cli``)."""
