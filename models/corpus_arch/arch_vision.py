"""placeholder"""


def specs():
    return []
