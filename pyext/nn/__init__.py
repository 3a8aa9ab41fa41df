"""Modules built on kexue ops."""
