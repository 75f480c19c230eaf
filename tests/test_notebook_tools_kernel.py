"""The notebook toolset in a real IPython kernel (jupyter_client), through the Python API: the
cell waits in send_and_wait while the tools read the kernel's namespace from their threads."""

from __future__ import annotations

import pytest
from test_magics_kernel import Kernel, kernel  # noqa: F401  (the module-scoped kernel fixture)

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

SETUP = """
import pandas as pd
from copilot import CopilotClient
from copilot_jupyter.tools import notebook_tools
df = pd.DataFrame({"city": ["Paris", "Oslo", "Rome", "Lima"], "temp": [21.5, 9.0, 25.25, 18.0]})
tool_client = CopilotClient(default_model="echo")
tool_session = tool_client.create_session(
    model="echo", tools=notebook_tools(get_ipython(), allow_run_code=True)
)
"""


def test_the_model_describes_a_dataframe_and_cannot_run_code_unapproved(kernel: Kernel) -> None:  # noqa: F811
    kernel.run(SETUP)
    described = kernel.run(
        'r = tool_session.send_and_wait(\'call describe_variable {"name": "df"}\', timeout=60)\n'
        "print(r.data.content)"
    )
    lines = described.stdout.splitlines()
    assert lines[0] == "df: pandas.DataFrame, shape (4, 2)"  # the reply cites the shape
    assert any("Lima" in line for line in lines)  # the head
    denied = kernel.run(
        'r = tool_session.send_and_wait(\'call run_code {"code": "made_by_model = 1"}\', '
        "timeout=60)\nprint(r.data.content)\nprint('made_by_model' in globals())"
    )
    assert denied.stdout.splitlines() == [
        "Permission to run 'run_code' was denied: no one could be asked.",
        "False",
    ]
    kernel.run("tool_client.stop()")
