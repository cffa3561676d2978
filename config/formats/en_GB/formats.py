# Every time on a screen names its zone: "Tue 1 Dec 2026 09:00 GMT". The admin shows times
# in the zone in play (the course's site on its pages), and the abbreviation says which.
DATE_FORMAT = "D j M Y"
DATETIME_FORMAT = "D j M Y H:i T"
SHORT_DATE_FORMAT = "d/m/Y"
SHORT_DATETIME_FORMAT = "d/m/Y H:i T"
TIME_FORMAT = "H:i T"
