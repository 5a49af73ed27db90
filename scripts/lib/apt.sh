# Sourced by the install scripts: apt_install PACKAGE... installs Debian packages (as root, with
# a few tries: the mirrors can hiccup), or says what to install and fails when it cannot.
apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing $*: install them (Debian: apt-get install -y $*)" >&2
    exit 1
  fi
  echo "== installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  for attempt in 1 2 3; do
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then return 0; fi
    if [ "$attempt" -eq 3 ]; then echo "could not install $*" >&2; exit 1; fi
    sleep $((attempt * 5))
  done
}
