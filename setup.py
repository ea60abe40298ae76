"""Build hook: the wheel carries the top-level `conf/` as `vqi/conf` (the layout keeps `conf/` at
the top, and setuptools' package data cannot reach outside the package). Metadata: pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "vqi" / "conf"
        shutil.copytree(Path(__file__).parent / "conf", target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithConf})
