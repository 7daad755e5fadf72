#!/usr/bin/python3
"""profile-reads.py: instructions per ListMessages / ListConversations call of omnichat-persistence
under callgrind, for a fixed number of calls (repeatable on a busy machine, unlike times).

Usage: python3 scripts/profile-reads.py [--calls N] [--bin-dir DIR]

Starts a throwaway PostgreSQL cluster and the service (plaintext, logs at info) through the
integration harness, stores one conversation of 120 messages in a tenant of 60 conversations,
then for each of ListMessages (first page of 50) and ListConversations (first page of 50) zeroes
the service's counters, makes N calls, and dumps them. Prints instructions per call and the
statements PostgreSQL executed per call, counted in the server log (log_statement = all for the
service's role). They travel in one pipeline with one Sync, so one round trip (common/src/pg.c).
Profiles and the server log stay in var/profile-reads/ for callgrind_annotate. Heavy (a minute
or two); never part of CI.
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    a = ap.parse_args()
    os.environ["OMNICHAT_BIN_DIR"] = os.path.abspath(a.bin_dir)
    import harness
    from harness import Api, Builder, Db, PgCluster, Service, pb

    out = os.path.join(ROOT, "var", "profile-reads")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.startswith("callgrind."):
            os.unlink(os.path.join(out, f))
    cluster = PgCluster().init()
    svc = None
    try:
        cluster.start()
        svc = Service(cluster, tls=None, extra_args=["--log-level", "info"])
        svc.migrate()
        cluster.grant()
        wrapper = os.path.join(out, "valgrind-persistence.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec valgrind --tool=callgrind "
                    f"--callgrind-out-file={out}/callgrind.persistence.%p {svc.bin} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        svc.bin = wrapper
        db = Db(cluster.dsn("super"))
        # Every statement the service's sessions execute appears in the server log.
        db.run("ALTER ROLE omnichat_app SET log_statement = 'all'")
        svc.start(timeout=300)
        pg_log = os.path.join(cluster.dir, "postgres.log")
        pid = svc.proc.pid
        api = Api(svc.channel, timeout=120)
        b = Builder(api)
        acct = b.account()
        convs = [b.conversation(acct) for _ in range(60)]
        big = convs[0]
        for i in range(120):
            b.message(big, 1_690_000_000_000 + i * 1000, key=f"k-{i}", text=f"message {i}")

        def log_counts(since):
            with open(pg_log, errors="replace") as f:
                f.seek(since)
                text = f.read()
            return text.count("LOG:  execute ")

        calls = {
            "ListMessages": lambda: api.ListMessages(tenant_id=b.tenant,
                                                     conversation_id=big.conversation_id,
                                                     page_size=50),
            "ListConversations": lambda: api.ListConversations(tenant_id=b.tenant, page_size=50),
        }
        for name, call in calls.items():
            call()  # warm: prepared statements, caches
            subprocess.run(["callgrind_control", "-z", str(pid)], check=True,
                           stdout=subprocess.DEVNULL)
            log0 = os.path.getsize(pg_log)
            for _ in range(a.calls):
                r = call()
            executes = log_counts(log0)
            subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True,
                           stdout=subprocess.DEVNULL)
            rows = len(r.messages) if name == "ListMessages" else len(r.conversations)
            dumps = sorted((f for f in os.listdir(out) if f.startswith(f"callgrind.persistence.{pid}.")),
                           key=lambda f: int(f.rsplit(".", 1)[1]))
            total = 0
            with open(os.path.join(out, dumps[-1])) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        total = int(line.split()[1])
                        break
            print(f"{name}: {a.calls} calls of {rows} rows: {total / a.calls:,.0f} instructions "
                  f"per call; PostgreSQL executed {executes / a.calls:.2f} statements per call "
                  f"({out}/{dumps[-1]})")
    finally:
        if os.path.exists(os.path.join(cluster.dir, "postgres.log")):
            shutil.copy(os.path.join(cluster.dir, "postgres.log"), os.path.join(out, "postgres.log"))
        if svc is not None:
            svc.stop(timeout=60)
        cluster.destroy()


if __name__ == "__main__":
    main()
