"""`pytest-llem bisect`: the first commit at which a benchmark's figure got worse.

Runs in the `pytest-llem` command's process. Each commit's benchmark runs in a `pytest --llem`
subprocess in a git worktree of its own, which saves the run to the results store; this
package only reads saved runs back and compares them (`gating`), so it never imports the
experiment's child group (`isolation`, `backends`) nor the session's modules.

- `git`: the commits between GOOD and BAD, and the worktree they are checked out in;
- `search`: a commit's verdict against GOOD's run (good, bad, undecided) and the binary
  search over the verdicts, which never guesses past an undecided commit;
- `runner`: the `pytest --llem` command for one commit, run and stopped on a signal;
- `bisect`: the whole bisection, its transcript and its result.
"""
