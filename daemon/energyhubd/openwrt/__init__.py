"""openwrt."""
