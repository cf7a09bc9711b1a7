"""workspace: the user's code, data and results — git (commit, patch, worktrees), DVC data and
pipelines, metrics files and declared outputs — as capture records them and build and run
restore them."""
