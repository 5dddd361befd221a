"""``pyksm top``: the live monitor of KSM and KSM++ on this machine."""
