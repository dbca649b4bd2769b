"""Agents to try the fleet with and to measure it by, e.g.

    python3 -m swarmd.agent swarmd.examples:echo
    python3 -m swarmd.agent --http 127.0.0.1:9000 swarmd.examples:echo
    swarmd bench --agent-command "python3 -m swarmd.agent swarmd.examples:echo"
"""


def echo(data):
    """Answers its input: what the fleet costs around an agent, measured."""
    return data


class EmailAgent:
    """The seed's shape: a class with ``process_task(self, data)``."""

    def process_task(self, data):
        address = data.get("to", "")
        return {"to": address, "valid": "@" in address and "." in address.split("@")[-1]}
