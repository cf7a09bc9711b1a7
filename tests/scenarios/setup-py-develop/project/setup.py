from setuptools import setup

setup(
    name="legacylib",
    version="1.4.0",
    packages=["legacylib"],
    entry_points={"console_scripts": ["legacy-scale = legacylib:main"]},
)
