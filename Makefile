# loginchroot: thin wrapper around SwiftPM for building, installing, the
# demo and the tests. `make demo` and `make test` are the README's two commands.

PREFIX      ?= /usr/local
PAMDIR      ?= /lib/x86_64-linux-gnu/security
RELEASE     := .build/release
MODULE      := $(RELEASE)/pam_loginchroot.so
CLI         := $(RELEASE)/loginchroot

.PHONY: all build policy debug-build deps demo check lint test unit-test integration-test lab-test package-test system-test deb bench install clean

all: build

deps:
	sh scripts/install-deps.sh

# The static libstdc++ link the module wants (see Package.swift). The
# runtime is linked in statically, so no $$ORIGIN library search path either.
build:
	mkdir -p .build/static-libstdcxx
	ln -sf "$$(gcc -print-file-name=libstdc++.a)" .build/static-libstdcxx/libstdc++.a
	swift build -c release --disable-local-rpath
	cp $(RELEASE)/libloginchroot_pam.so $(MODULE)

# The SELinux policy module (selinux/), built with Debian's refpolicy
# development files, out of the source tree.
policy:
	rm -rf .build/selinux && mkdir -p .build/selinux && cp selinux/loginchroot.te selinux/loginchroot.fc selinux/loginchroot.if .build/selinux/
	$(MAKE) -s -C .build/selinux -f /usr/share/selinux/devel/Makefile loginchroot.pp

# The Debian package, with debhelper: .build/deb/loginchroot_VERSION_amd64.deb.
deb: build policy
	fakeroot debian/rules binary

# The tests' own build: its named crash steps are live (CrashPoints.swift).
debug-build:
	swift build

demo: deps build
	bash scripts/demo.sh

unit-test:
	swift build --build-tests
	rm -f .build/reliability/unit.jsonl && mkdir -p .build/reliability
	LC_RELIABILITY_LOG=$(CURDIR)/.build/reliability/unit.jsonl swift test --skip-build
	sh Tests/shim/run.sh

# The fast tier: the unit tests and lint (no VM, no mounts).
check: deps
	swift build --build-tests
	swift test --skip-build
	$(MAKE) lint

# The module runs inside sshd, login and display managers: nothing in
# Sources may crash its host. Then the Python tests' and the shell scripts'.
lint:
	@if grep -rnE 'fatalError\(|try!|precondition(Failure)?\(' Sources; then \
		echo "lint: Sources may not crash the process it runs in (throw a typed error instead)"; exit 1; fi
	python3 -m pyflakes Tests bench scripts
	for f in scripts/*.sh; do bash -n "$$f" || exit 1; done
	for f in debian/loginchroot.postinst debian/loginchroot.prerm debian/loginchroot.postrm; do sh -n "$$f" || exit 1; done

# Then the conformance suite again on overlay with erofs generations, and
# what only erofs has (test_erofs.py).
EROFS_CONFORMANCE = $(addprefix Tests/integration/,test_pamtester.py test_cli.py test_clients.py test_crashes.py test_erofs.py)
integration-test: build debug-build
	LC_MODULE=$(CURDIR)/$(MODULE) LC_CLI=$(CURDIR)/$(CLI) python3 -m pytest -v -p no:cacheprovider Tests/integration
	rm -f .build/reliability/host-erofs.jsonl
	LC_BACKENDS=overlay-erofs LC_RELIABILITY_LOG=$(CURDIR)/.build/reliability/host-erofs.jsonl \
	    LC_MODULE=$(CURDIR)/$(MODULE) LC_CLI=$(CURDIR)/$(CLI) python3 -m pytest -v -p no:cacheprovider $(EROFS_CONFORMANCE)

# The dm-thin tier, in the VM lab: the build machine's kernel may have no
# device-mapper.
lab-test: deps build debug-build
	bash scripts/lab-test.sh

# The package, checked (lintian, systemd-analyze) and installed, enabled,
# removed and purged in a Debian 12 made by mmdebstrap.
package-test: deps deb
	python3 -m pytest -v -p no:cacheprovider Tests/package

# The full-system lab: a Debian 12 booted with systemd under qemu, the
# package installed and enabled there, real logins (scripts/fullsystem-image.sh);
# then its labelled variant booted with SELinux (permissive), which measures
# the denials the module adds.
system-test: deps deb
	python3 -m pytest -v -p no:cacheprovider Tests/fullsystem
	python3 -m pytest -v -p no:cacheprovider Tests/selinux

# The whole suite, then RELIABILITY.md from the rows its tests recorded.
# Once the host tier is done (its page-cache test wants a quiet machine), the
# full-system lab's two disks are built in the background while the VM lab
# runs; system-test's own build of each waits for it (a lock) and finds it
# done, or builds it and shows why not.
test: deps lint unit-test integration-test
	mkdir -p .build
	(bash scripts/fullsystem-image.sh .build/fullsystem && \
	 bash scripts/fullsystem-image.sh .build/fullsystem-selinux selinux) > .build/fullsystem-images.log 2>&1 &
	$(MAKE) demo lab-test package-test system-test
	python3 scripts/reliability-report.py

# Benchmarks, not tests: BENCHMARKS.md, side by side with schroot and LVM
# (bench/bench.py; the dm-thin part boots the VM lab, the ssh login on a
# systemd machine the full-system lab, with the package).
bench:
	sh scripts/install-deps.sh bench
	$(MAKE) build deb
	PYTHONPATH=Tests python3 bench/bench.py

install: build
	install -d $(DESTDIR)$(PAMDIR) $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/etc/loginchroot \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 644 $(MODULE) $(DESTDIR)$(PAMDIR)/pam_loginchroot.so
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/sbin/loginchroot
	install -m 644 doc/loginchroot.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 doc/loginchroot.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -D -m 644 debian/loginchroot.pam-config $(DESTDIR)/usr/share/pam-configs/loginchroot
	install -D -m 644 polkit/50-loginchroot.rules $(DESTDIR)/etc/polkit-1/rules.d/50-loginchroot.rules
	[ -e $(DESTDIR)/etc/loginchroot/loginchroot.conf ] || \
		install -m 644 doc/loginchroot.conf.example $(DESTDIR)/etc/loginchroot/loginchroot.conf

clean:
	rm -rf .build
