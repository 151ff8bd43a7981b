#!/usr/bin/env python3
"""Repository hooks that tell a buildmaster about pushed commits.

One script for two version-control systems, run on the server that receives
the pushes. Every change is posted to the master's `base` change hook, one
request per commit, oldest first.

git, as the repository's hooks/post-receive (make it executable):

    #!/bin/sh
    exec python3 /usr/local/share/buildmaster/buildmaster_vcs_hook.py git \\
        --master http://ci.example.org:8010 --repository https://git.example.org/app.git

  A pushed branch gives one change per new commit: for an updated branch the
  commits it did not have, for a new branch the commits no other branch has.
  A pushed tag gives one change for the commit it names, with the tag's name
  as branch. Deleted refs, and refs other than branches and tags, give none.

Mercurial, in the repository's .hg/hgrc:

    [hooks]
    changegroup.buildmaster = python3 /usr/local/share/buildmaster/buildmaster_vcs_hook.py hg --master http://ci.example.org:8010

  Every changeset the push (or pull, or unbundle) added gives one change, on
  its named branch (`default` included).

Options may also be set in the repository's configuration, the command line
winning: `git config buildmaster.master http://ci:8010`, or in hgrc a
`[buildmaster]` section with `master = http://ci:8010`. The repository of the
changes defaults to the repository's own path. Only Python 3's standard
library is used. The exit status is 1 when a change could not be sent; the
pusher sees why on standard error.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

ZERO = "0" * 40
OPTIONS = ("master", "auth", "repository", "project", "category", "codebase", "revlink")


def run(*args):
    """The output of a command, without its final newline."""
    result = subprocess.run(list(args), check=True, capture_output=True, text=True)
    return result.stdout.rstrip("\n")


def configured(vcs, option):
    """The repository's `buildmaster.<option>` setting, or None."""
    key = f"buildmaster.{option}"
    command = ["git", "config", "--get", key] if vcs == "git" else ["hg", "config", key]
    result = subprocess.run(command, capture_output=True, text=True)
    value = result.stdout.strip()
    if result.returncode != 0 or not value:
        return None
    return value


def parse_options(argv):
    parser = argparse.ArgumentParser(
        description="Post pushed commits to a buildmaster's base change hook."
    )
    parser.add_argument("vcs", choices=["git", "hg"], help="the repository's kind")
    parser.add_argument("--master", help="the master's URL, e.g. http://ci.example.org:8010")
    parser.add_argument("--auth", help="USER:PASSWORD for a master with change_hook_auth")
    parser.add_argument("--repository", help="the repository of every change")
    parser.add_argument("--project", help="the project of every change")
    parser.add_argument("--category", help="the category of every change")
    parser.add_argument("--codebase", help="the codebase of every change")
    parser.add_argument("--revlink", help="a link to a commit, %%s standing for its id")
    options = parser.parse_args(argv)
    for option in OPTIONS:
        if getattr(options, option) is None:
            setattr(options, option, configured(options.vcs, option))
    if not options.master:
        parser.error("--master (or the setting buildmaster.master) is required")
    return options


# git


def git_commits(old, new, ref):
    """The commits a ref update brings, oldest first."""
    if ref.startswith("refs/tags/"):
        return [run("git", "rev-parse", f"{new}^{{commit}}")]
    if old == ZERO:
        others = [
            name
            for name in run("git", "for-each-ref", "--format=%(refname)", "refs/heads/").split("\n")
            if name and name != ref
        ]
        return run("git", "rev-list", "--reverse", new, "--not", *others).split()
    return run("git", "rev-list", "--reverse", f"{old}..{new}").split()


def git_files(revision):
    """The files a commit touches; for a merge, against its first parent."""
    parents = run("git", "rev-list", "--parents", "-n", "1", revision).split()[1:]
    if parents:
        output = run("git", "diff", "--name-only", "--no-renames", parents[0], revision)
    else:
        output = run("git", "diff-tree", "-r", "--name-only", "--no-commit-id", "--root", revision)
    return [name for name in output.split("\n") if name]


def git_changes(lines):
    """The changes of a push, from post-receive's `old new ref` lines."""
    for line in lines:
        try:
            old, new, ref = line.split()
        except ValueError:
            continue
        if new == ZERO:
            continue
        for prefix in ("refs/heads/", "refs/tags/"):
            if ref.startswith(prefix):
                branch = ref[len(prefix):]
                break
        else:
            continue
        for revision in git_commits(old, new, ref):
            author, committer, when, comments = run(
                "git", "show", "--no-patch", "--format=%an <%ae>%x00%cn <%ce>%x00%ct%x00%B", revision
            ).split("\0", 3)
            yield {
                "author": author,
                "committer": committer,
                "when_timestamp": when,
                "comments": comments.strip(),
                "revision": revision,
                "branch": branch,
                "files": git_files(revision),
            }


# Mercurial


def hg_changes(environ):
    """The changesets a changegroup hook was called for."""
    first = environ.get("HG_NODE")
    if not first:
        return
    last = environ.get("HG_NODE_LAST", "tip")
    for changeset in json.loads(run("hg", "log", "-v", "-T", "json", "-r", f"{first}:{last}")):
        yield {
            "author": changeset["user"],
            "when_timestamp": str(changeset["date"][0]),
            "comments": changeset["desc"],
            "revision": changeset["node"],
            "branch": changeset["branch"],
            "files": changeset["files"],
        }


def post(options, change):
    """Posts one change to the base hook; raises on any answer but 2xx."""
    fields = dict(change, files=json.dumps(change["files"]))
    for option in ("repository", "project", "category", "codebase"):
        if getattr(options, option):
            fields[option] = getattr(options, option)
    if options.revlink:
        fields["revlink"] = options.revlink.replace("%s", change["revision"])
    request = urllib.request.Request(
        options.master.rstrip("/") + "/change_hook/base",
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if options.auth:
        token = base64.b64encode(options.auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30):
        pass


def main(argv):
    options = parse_options(argv)
    if options.vcs == "git":
        changes = git_changes(sys.stdin)
        root = run("git", "rev-parse", "--absolute-git-dir")
    else:
        changes = hg_changes(os.environ)
        root = run("hg", "root")
    if not options.repository:
        options.repository = root
    failed = 0
    for change in changes:
        try:
            post(options, change)
        except (urllib.error.URLError, OSError) as error:
            failed += 1
            print(
                f"buildmaster: change {change['revision'][:12]} on {change['branch']} "
                f"was not sent to {options.master}: {error}",
                file=sys.stderr,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
