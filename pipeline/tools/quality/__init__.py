"""How good the answers are, measured offline: faq evaluation, calibration, the int8 encoder's check."""
