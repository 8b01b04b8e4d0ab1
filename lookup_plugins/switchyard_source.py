"""Where a part of this project lies on the control node: `lookup('switchyard_source', 'gateway')`.

The roles ship what the project itself holds (the gateway package) from the checkout they run
from, wherever the playbook that calls them is.
"""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
name: switchyard_source
short_description: the path of a part of the Switchyard checkout on the control node
description: For each term (relative to the project's root), its absolute path; fails when it is missing.
options:
  _terms:
    description: paths relative to the project's root
    required: true
"""

PROJECT = Path(__file__).resolve().parents[1]


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        paths = [PROJECT / term for term in terms]
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise AnsibleLookupError(f"not in the Switchyard checkout: {', '.join(missing)}")
        return [str(path) for path in paths]
