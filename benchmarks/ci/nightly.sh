#!/usr/bin/env bash
# Nightly leaderboard regeneration: every step of .github/workflows/nightly.yml, which only calls this script with a
# step name (README.md, "Nightly regeneration"; tests/test_nightly.py runs the same steps). Run from anywhere: each
# step works in the repository that holds this script.
#
#   nightly.sh test                      make test (the whole suite, actionlint on the workflows included)
#   nightly.sh bench [ARG ...]           make bench on synthetic with REPLACE=1: the published synthetic results and
#                                        leaderboards/synthetic.md are replaced; ARGs go to `grbench bench` (key=value
#                                        overrides, --publish, ...; no spaces inside one); MODEL=a,b limits the models
#   nightly.sh pages                     make leaderboard: every page regenerated from the result files alone
#   nightly.sh gpu BUNDLE OUT [ARG ...]  the paper track on a GPU node (benchmarks/gpu/paper_track.sh); an absent
#                                        build/gpu-bundle is built first (make gpu-bundle); ARGs go to paper_track.sh
#   nightly.sh publish [--push]          commit leaderboards/ when a page (leaderboards/*.md) changed in more than its
#                                        time, throughput and commit cells, with a message ending in [skip ci];
#                                        nothing changed: no commit. --push pushes that commit.
#
# Environment: VENV (the virtualenv, default .venv, as the Makefile), MODEL (bench: default all), PYTEST_ARGS (test),
# GRBENCH_GPU_PYTHON (gpu: the interpreter with CUDA torch, default python3), GRBENCH_GPU_MINUTES (gpu: the wall
# budget of all paper-track runs, default 60), GRBENCH_CACHE_DIR / GRBENCH_DATA_DIR (as everywhere).
set -euo pipefail

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "nightly.sh: $*" >&2
  exit 2
}

cd "$(dirname "$0")/../.."

step_test() {
  [ $# -eq 0 ] || die "test takes no arguments (PYTEST_ARGS='...' sets pytest's)"
  make test PYTEST_ARGS="${PYTEST_ARGS:--q --durations=15}"
}

step_bench() {
  local arg
  for arg in "$@"; do
    case $arg in
      *[[:space:]]*) die "bench: '$arg' holds a space; pass each key=value override as one word without spaces" ;;
    esac
  done
  # REPLACE=1: the recipe runs replace the published synthetic results, and the page is regenerated from them.
  make bench DATASET=synthetic MODEL="${MODEL:-all}" REPLACE=1 ARGS="$*"
}

step_pages() {
  [ $# -eq 0 ] || die "pages takes no arguments"
  make leaderboard
}

step_gpu() {
  [ $# -ge 2 ] || die "usage: nightly.sh gpu BUNDLE OUT [ARG ...] (BUNDLE: the folder \`make gpu-bundle\` writes)"
  local bundle=$1 out=$2
  shift 2
  if [ ! -f "$bundle/manifest.json" ]; then
    if [ "${bundle%/}" = build/gpu-bundle ]; then
      echo "== $bundle is absent: building it (make gpu-bundle)"
      make gpu-bundle
    else
      die "gpu: $bundle/manifest.json not found; build a bundle with \`make gpu-bundle\` (it writes build/gpu-bundle)"
    fi
  fi
  # paper_track.sh keeps the last --minutes it is given: a --minutes in ARGs wins over the default here.
  PYTHON="${GRBENCH_GPU_PYTHON:-python3}" benchmarks/gpu/paper_track.sh "$bundle" "$out" \
    --minutes "${GRBENCH_GPU_MINUTES:-60}" "$@"
}

# A page with the table cells that differ on every run of the same code and data blanked: the columns headed
# Train time, Eval users/s, Commit and ms/user. Two pages that agree after this differ in nothing a reader compares.
stable_page() {
  awk -F'|' -v OFS='|' '
    /^\|/ {
      if (!table) {
        table = 1; split("", drop)
        for (i = 2; i < NF; i++) {
          h = $i; gsub(/^ +| +$/, "", h)
          if (h == "Train time" || h == "Eval users/s" || h == "Commit" || h == "ms/user") drop[i] = 1
        }
      }
      for (i in drop) $i = " ~ "
      print; next
    }
    { table = 0; print }'
}

step_publish() {
  local push=0
  case ${1-} in
    "") ;;
    --push) push=1; shift ;;
    *) die "publish: unknown argument '$1' (only --push)" ;;
  esac
  [ $# -eq 0 ] || die "publish: unknown argument '$1' (only --push)"
  git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "publish: $PWD is not a git work tree"
  [ "$push" -eq 0 ] || [ "${GITHUB_REF_TYPE:-branch}" = branch ] \
    || die "publish --push: this run is on a $GITHUB_REF_TYPE, not a branch: nothing to push to"
  # The pages that are new, or differ from the last commit in more than their times, throughput and commit cells
  # (stable_page). Result files and plots change on every run (times, commits); they are committed with a changed
  # page, never alone.
  local pages="" page
  local spec=':(glob)leaderboards/*.md'      # the generated pages (not leaderboards/notes/)
  for page in $(git ls-files --others --exclude-standard -- "$spec"); do
    pages+="$page"$'\n'
  done
  for page in $(git diff --name-only HEAD -- "$spec"); do
    if [ ! -f "$page" ] || ! cmp -s <(git show "HEAD:$page" | stable_page) <(stable_page < "$page"); then
      pages+="$page"$'\n'
    else
      echo "publish: $page differs only in times, throughput or commit cells"
    fi
  done
  pages=$(printf '%s' "$pages" | sed '/^$/d' | sort -u)
  if [ -z "$pages" ]; then
    echo "publish: no leaderboard page (leaderboards/*.md) changed: nothing committed"
    if [ -n "$(git status --porcelain -- leaderboards/)" ]; then
      echo "publish: other files under leaderboards/ differ (results, plots, notes) and are left uncommitted:"
      git status --short -- leaderboards/
    fi
    return 0
  fi
  local names subject
  names=$(echo "$pages" | sed 's#^leaderboards/##' | paste -sd, - | sed 's/,/, /g')
  subject="leaderboards: nightly regeneration of $names [skip ci]"
  # The bot's name where the checkout has no identity (a CI runner); a local identity is kept.
  local ident=()
  git config user.name >/dev/null || ident+=(-c "user.name=github-actions[bot]")
  git config user.email >/dev/null || ident+=(-c "user.email=41898282+github-actions[bot]@users.noreply.github.com")
  git add -A -- leaderboards/
  # A pathspec commit: only leaderboards/ goes in, whatever else the index holds.
  git ${ident[@]+"${ident[@]}"} commit --quiet -m "$subject" -- leaderboards/
  echo "publish: committed $(git rev-parse --short HEAD): $subject"
  git show --stat --format= HEAD
  [ "$push" -eq 1 ] || return 0
  local branch=${GITHUB_REF_NAME:-}
  [ -n "$branch" ] || branch=$(git symbolic-ref --short HEAD 2>/dev/null) \
    || die "publish --push: HEAD is detached and GITHUB_REF_NAME is unset: no branch to push to"
  if ! git push origin "HEAD:refs/heads/$branch"; then
    # The branch moved while the benchmarks ran: replay the leaderboard commit on top of it, once.
    echo "publish: push rejected; rebasing onto origin/$branch and pushing again"
    git ${ident[@]+"${ident[@]}"} pull --rebase --autostash origin "$branch"
    git push origin "HEAD:refs/heads/$branch"
  fi
  echo "publish: pushed to origin/$branch"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
step=$1
shift
case $step in
  test | bench | pages | gpu | publish) "step_$step" "$@" ;;
  -h | --help | help) usage ;;
  *) echo "nightly.sh: unknown step '$step'" >&2; usage >&2; exit 2 ;;
esac
