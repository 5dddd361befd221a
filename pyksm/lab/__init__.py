"""The lab: build the test kernel (patched, vanilla, debug) and boot it.

Stages are separate and separately reported, like kunit.py: source ->
patches -> kconfig -> build -> vm (boot + console watch).
"""
