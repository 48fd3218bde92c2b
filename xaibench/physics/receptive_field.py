"""(being written this session)"""


def add_commands(commands) -> dict:
    return {}
