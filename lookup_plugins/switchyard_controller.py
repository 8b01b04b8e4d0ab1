"""Who is running this playbook: `user@host pid N`, for the run lock's holder.

Lookups run in Ansible's worker processes, whose parent is the ansible-playbook process:
its pid identifies the run, and lets a later run on the same control node tell a lock
left by a run that died from one still going (playbooks/lock.yml).
"""

from __future__ import annotations

import getpass
import os
import socket

from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
name: switchyard_controller
short_description: the control node's user, host and ansible-playbook pid
description: Returns one string, C(user@host pid N), naming the running ansible-playbook.
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [f"{getpass.getuser()}@{socket.gethostname()} pid {os.getppid()}"]
