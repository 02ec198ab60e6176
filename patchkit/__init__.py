"""patchkit: Forget-Me-Not concept patches for Stable Diffusion, as a release workflow."""

__version__ = "0.1.0"
TOOL = f"patchkit {__version__}"  # what every file patchkit writes records as its maker
