"""Plain pip install of the Python side (no ROS build): `pip install -e .` or `pip install .`.

The ROS 2 package (message generation, share/ files, `ros2 run` executables) is built by colcon from
CMakeLists.txt; this file gives the same Python package and console scripts to machines without ROS.
"""

from setuptools import find_packages, setup

setup(
    name="zeroseg_ros",
    version="0.1.0",
    description="Zero-shot segmentation of camera images by free-text queries with training-free dense CLIP",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=("zeroseg_ros", "zeroseg_ros.*")),
    package_data={"zeroseg_ros": ["core/vocab/*.txt", "tools/evaluation/*.json"]},
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "open-clip-torch>=2.24",
        "opencv-python-headless",
        "numpy",
        "tqdm",
        "pillow",
        "PyYAML",
        "matplotlib",
    ],
    entry_points={
        "console_scripts": [
            "zeroseg = zeroseg_ros.tools.cli:main",
            "zeroseg_node = zeroseg_ros.ros.node:main",
            "zeroseg_demo_camera = zeroseg_ros.ros.demo_camera:main",
        ]
    },
)
