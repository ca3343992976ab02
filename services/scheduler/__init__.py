"""The scheduler service.

Decides who is contacted, when, on which channel and with which offer, inside the compliance packs.
"""
