"""Triton kernels of kexue, installed as ``kexue.triton_kernels`` (never a top-level name:
the triton project ships a package called ``triton_kernels``).  Importing this package
needs no triton; each kernel module imports triton itself."""
