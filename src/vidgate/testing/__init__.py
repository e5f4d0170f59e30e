"""Test helpers: faithful fake upstream servers (Vidu, PixVerse) and what they share.

See docs/fake-upstreams.md. Nothing in here is imported by the gateway at run time.
"""
