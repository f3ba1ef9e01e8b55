#!/usr/bin/env python3
# Issue 20 (h20a): a model of the readings table and outbox of the store (not the store itself:
# Python sqlite3, random 180-byte "sealed" payloads) to compare the WAL bytes per reading of
# dedup-index designs, batches of 100, checkpoint every 2,000 readings, after PRE stored rows.
# Not run by CI: a measurement for issue 20, kept beside the CI scripts (the top level is fixed).
# Usage: .ci/dedup-index-model.py [PRE] [pages]   (pages: the first two designs at 1/2/8 KiB pages;
#        MODEL_ONLY=<part of a design's name> runs only the matching designs)
import sqlite3, os, sys, time, hmac, hashlib
PRE=int(sys.argv[1]) if len(sys.argv)>1 else 200000
N=20000
KEY=os.urandom(32)
def variants():
    base="""CREATE TABLE readings(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, device_id INTEGER NOT NULL,
      dedup BLOB NOT NULL {u}, received_min INTEGER NOT NULL, key_id INTEGER NOT NULL, sealed BLOB NOT NULL) STRICT;
    CREATE INDEX readings_key ON readings(key_id);
    CREATE TABLE outbox(id INTEGER PRIMARY KEY, item TEXT NOT NULL, item_id INTEGER NOT NULL, priority INTEGER NOT NULL,
      state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL, key_id INTEGER,
      last_error BLOB, created_min INTEGER NOT NULL, done_at INTEGER, UNIQUE(item,item_id)) STRICT;
    CREATE INDEX outbox_ready ON outbox(state, priority, id);
    CREATE INDEX outbox_done ON outbox(state, done_at);"""
    yield "today: 32-byte keyed hash, UNIQUE", base.format(u="UNIQUE"), lambda d,k,t: hmac.new(KEY,k,hashlib.sha256).digest()
    yield "plaintext: stable key (device|seq), UNIQUE", base.format(u="UNIQUE"), lambda d,k,t: b"dev%d|%08d"%(d,int(k.split(b'-')[1]))
    yield "16-byte keyed hash, UNIQUE", base.format(u="UNIQUE"), lambda d,k,t: hmac.new(KEY,k,hashlib.sha256).digest()[:16]
    yield "16-byte keyed hash, separate WITHOUT ROWID table", base.format(u="")+"CREATE TABLE dedup(h BLOB PRIMARY KEY) WITHOUT ROWID;", None
    yield "keyed device tag (8 B) + keyed hash (16 B)", base.format(u="UNIQUE"), lambda d,k,t: hmac.new(KEY,b"dev%d"%d,hashlib.sha256).digest()[:8]+hmac.new(KEY,k,hashlib.sha256).digest()[:16]
    yield "received day (plain, 2 B) + keyed hash (16 B)", base.format(u="UNIQUE"), lambda d,k,t: (t//1440).to_bytes(2,'big')+hmac.new(KEY,k,hashlib.sha256).digest()[:16]
    # Schema v9 (h20s, src/store/db/dedup.rs): keyed device, device month, device day (2 B each) + keyed hash.
    H=lambda b: hmac.new(KEY,b"bucket|"+b,hashlib.sha256).digest()[:2]
    yield "v9: keyed device|month|day (3x2 B) + keyed hash (16 B)", base.format(u="UNIQUE"), lambda d,k,t: H(b"%d"%d)+H(b"%d|%d"%(d,t//43200))+H(b"%d|%d|%d"%(d,t//43200,t//1440))+hmac.new(KEY,k,hashlib.sha256).digest()[:16]
def run(name, schema, f, page=4096):
    path=os.path.join(os.environ.get("TMPDIR", "/tmp"), "dedup-index-model.db")
    for e in ["","-wal","-shm"]:
        try: os.remove(path+e)
        except FileNotFoundError: pass
    c=sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA page_size={page}"); c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
    c.executescript(schema)
    sep = f is None
    def ins(i, devs=4):
        d=i%devs; t=27_000_000+i  # one a minute
        k=b"stable-%d"%i
        h=hmac.new(KEY,k,hashlib.sha256).digest()[:16] if sep else f(d,k,t)
        uuid="%012x-%s"%(t*60000, os.urandom(8).hex())
        c.execute("INSERT INTO readings(uuid,device_id,dedup,received_min,key_id,sealed) VALUES(?,?,?,?,1,?)",(uuid,d,h,t,os.urandom(180)))
        rid=c.execute("SELECT last_insert_rowid()").fetchone()[0]
        if sep: c.execute("INSERT INTO dedup(h) VALUES(?)",(h,))
        c.execute("INSERT INTO outbox(item,item_id,priority,state,next_attempt,key_id,created_min) VALUES('reading',?,1,'pending',0,1,?)",(rid,t))
    for b in range(0,PRE,1000):
        c.execute("BEGIN")
        for i in range(b,min(b+1000,PRE)): ins(i)
        c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("PRAGMA wal_autocheckpoint=0")
    frames=0; ck=0
    for b in range(PRE,PRE+N,100):
        c.execute("BEGIN")
        for i in range(b,b+100): ins(i)
        c.execute("COMMIT")
        if (b-PRE)%2000==1900:
            frames+=max(0,os.path.getsize(path+"-wal")-32)//(page+24); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    frames+=max(0,os.path.getsize(path+"-wal")-32)//(page+24)
    print(f"{name:55s} page {page}: {frames/N:.3f} WAL frames/reading = {frames*(page+24)/N:,.0f} B/reading to the WAL (checkpoint every 2,000 readings)")
    c.close()
import itertools
if len(sys.argv)>2:
    for v in itertools.islice(variants(),2):
        for p in (1024,2048,8192): run(*v, page=p)
else:
    only=os.environ.get("MODEL_ONLY")  # run only the designs whose name contains this
    for v in variants():
        if not only or only in v[0]: run(*v)
