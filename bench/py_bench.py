"""Python side of bench/run.sh: botocore's SigV4Auth. One JSON object per line.
python3 py_bench.py BODY_FILE"""
import json, sys, time, platform
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROUNDS = 7
body = open(sys.argv[1], "rb").read()
label = "python %s, botocore %s" % (platform.python_version(), botocore.__version__)
secrets = ["wJalrXUtnFEMI/K7MDENG+bPxRfi%012d" % i for i in range(4096)]
headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.PutItem"}

def report(bench, impl, n, f):
    f(n // 10 + 1)
    r = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter_ns()
        f(n)
        r.append((time.perf_counter_ns() - t0) / n)
    r.sort()
    print(json.dumps({"bench": bench, "impl": "%s (%s)" % (impl, label), "unit": "ns", "best": round(r[0], 1),
                      "median": round(r[ROUNDS // 2], 1), "worst": round(r[-1], 1), "iters": n, "rounds": ROUNDS}),
          flush=True)

def make_req():
    return AWSRequest(method="POST", url="https://dynamodb.us-east-1.amazonaws.com/", data=body, headers=dict(headers))

auth0 = SigV4Auth(Credentials("AKIDEXAMPLE", secrets[0]), "dynamodb", "us-east-1")
r0 = make_req(); auth0.add_auth(r0)
print("botocore:", r0.headers["Authorization"], file=sys.stderr)

def cached(n):  # botocore has no key cache: it derives the key on every add_auth
    for _ in range(n):
        auth0.add_auth(make_req())

k = [1]
def derived(n):
    for _ in range(n):
        SigV4Auth(Credentials("AKIDEXAMPLE", secrets[k[0] % 4096]), "dynamodb", "us-east-1").add_auth(make_req())
        k[0] += 1

report("sigv4_cached", "botocore SigV4Auth.add_auth (derives key every call)", 1500, cached)
report("sigv4_derived", "botocore new SigV4Auth + add_auth", 1500, derived)
