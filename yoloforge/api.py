"""The YOLO facade (filled in as the stages land)."""


class YOLO:
    pass
