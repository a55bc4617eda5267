"""The optional compiled fast lane (globaldns/dns/_fastlane.c, issue 16).

Built by `pip install .` where a C compiler is present; where it is not (or the build fails),
the install goes on without it and the server uses the pure-Python UDP path.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the pure-Python path serves
            print(f"globaldns: fast lane not built ({exc}); the pure-Python UDP path is used")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"globaldns: fast lane not built ({exc}); the pure-Python UDP path is used")


setup(
    ext_modules=[Extension("globaldns.dns._fastlane", ["globaldns/dns/_fastlane.c"],
                           extra_compile_args=["-O2"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
