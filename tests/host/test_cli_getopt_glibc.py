"""Our getopt_long (cml_control/getopt.py) against the real one: a small C program runs glibc's
getopt_long with each option table of the original `control` (global, list, start, stop,
assign_iface, retrieve_logs) over thousands of argument vectors, and every option, value, operand
order and diagnostic must come out the same."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from cml_control.getopt import NO_ARGUMENT, OPTIONAL_ARGUMENT, REQUIRED_ARGUMENT, GetoptError, LongOption, getopt_long

pytestmark = [pytest.mark.host, pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")]

# The option tables of the original control.c (facts: names, argument kinds, values).
TABLES: dict[str, tuple[str, list[LongOption]]] = {
    "global": ("+s:h", [LongOption("socket", REQUIRED_ARGUMENT, "s"), LongOption("help", NO_ARGUMENT, "h")]),
    "list": ("s", [LongOption("system", NO_ARGUMENT, "s")]),
    "start": ("k::s", [LongOption("key", OPTIONAL_ARGUMENT, "k"), LongOption("no-switch", NO_ARGUMENT, "n"),
                       LongOption("setup", NO_ARGUMENT, "s")]),
    "stop": ("k", [LongOption("key", OPTIONAL_ARGUMENT, "k"), LongOption("no-switch", NO_ARGUMENT, "n"),
                   LongOption("setup", NO_ARGUMENT, "s")]),
    "iface": ("i::p", [LongOption("iface", REQUIRED_ARGUMENT, "i"), LongOption("persistent", NO_ARGUMENT, "p")]),
    "logs": ("r", [LongOption("remove", NO_ARGUMENT, "r")]),
}

DRIVER = r"""
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char *kinds[] = {"no", "req", "opt"};

int main(int argc, char **argv) {
    /* argv[1]: short options; argv[2]: long options as name:kind:key,...; argv[3..]: the vector,
       argv[3] being its argv[0] */
    struct option longs[8];
    int n = 0;
    char spec[256];
    strncpy(spec, argv[2], sizeof(spec) - 1);
    for (char *item = strtok(spec, ","); item && n < 7; item = strtok(NULL, ",")) {
        char *name = item, *kind = strchr(name, ':');
        *kind++ = 0;
        char *key = strchr(kind, ':');
        *key++ = 0;
        longs[n].name = name;
        longs[n].has_arg = !strcmp(kind, kinds[1]) ? required_argument
                         : !strcmp(kind, kinds[2]) ? optional_argument : no_argument;
        longs[n].flag = NULL;
        longs[n].val = key[0];
        n++;
    }
    memset(&longs[n], 0, sizeof(longs[n]));
    char **vec = &argv[3];
    int vc = argc - 3;
    optind = 0;
    int c, idx;
    while ((c = getopt_long(vc, vec, argv[1], longs, &idx)) != -1) {
        if (c == '?') {
            printf("error\n");
            return 0;
        }
        printf("opt %c %s\n", c, optarg ? optarg : "(null)");
    }
    for (int i = optind; i < vc; i++)
        printf("operand %s\n", vec[i]);
    return 0;
}
"""

POOLS = {
    "global": ["-s", "/x.sock", "-s/y", "--socket", "--socket=/z", "--so=/w", "--s", "-h", "--help", "--he", "list",
               "start", "-x", "--bogus", "--", "-", "-hs", "-sh", "--socket=", "--help=1", "--=x"],
    "list": ["list", "-s", "--system", "--sys", "--s", "extra", "-x", "--bogus", "--", "-", "-ss", "--system=1"],
    "start": ["c", "PIN", "-k", "-kPIN", "-k1", "--key", "--key=PIN", "--key=", "--ke=P", "--k=Q", "--k", "-s",
              "--setup", "--se", "--s", "--no-switch", "--n", "-sk1", "-ks", "-n", "--", "-", "-x", "--bogus",
              "--setup=1", "---", "-k-", "--=x", "--key=-v"],
    "stop": ["c", "PIN", "-k", "-kPIN", "--key", "--key=PIN", "--ke=P", "-s", "--setup", "--no-switch", "--", "-x"],
    "iface": ["c", "eth0", "-i", "-ieth0", "--iface", "--iface=eth1", "--if=eth2", "--i", "-p", "--persistent",
              "--pers", "--p", "-pieth3", "-ip", "--", "-", "-x", "--persistent=1"],
    "logs": ["/tmp", "d", "-r", "--remove", "--rem", "--r", "-rr", "--", "-x", "--remove=1", "extra"],
}


def long_spec(longs: list[LongOption]) -> str:
    kinds = {NO_ARGUMENT: "no", REQUIRED_ARGUMENT: "req", OPTIONAL_ARGUMENT: "opt"}
    return ",".join(f"{o.name}:{kinds[o.has_arg]}:{o.key}" for o in longs)


def ours(table: str, argv0: str, args: list[str]) -> tuple[str, str]:
    short, longs = TABLES[table]
    out: list[str] = []
    try:
        opts, operands = getopt_long(args, short, longs)
    except GetoptError as e:
        done = "".join(f"opt {k} {v if v is not None else '(null)'}\n" for k, v in e.options)
        return done + "error\n", f"{argv0}: {e}\n"
    out += [f"opt {k} {v if v is not None else '(null)'}" for k, v in opts]
    out += [f"operand {x}" for x in operands]
    return "".join(line + "\n" for line in out), ""


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("getopt")
    (d / "driver.c").write_text(DRIVER)
    subprocess.run(["gcc", "-O0", "-o", str(d / "driver"), str(d / "driver.c")], check=True, capture_output=True)
    return d / "driver"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_same_as_glibc(driver: Path, table: str) -> None:
    rng = random.Random(table)
    pool = POOLS[table]
    vectors = [[w] for w in pool] + [[rng.choice(pool) for _ in range(rng.randint(0, 6))] for _ in range(600)]
    short, longs = TABLES[table]
    argv0 = "control" if table == "global" else "start"
    for args in vectors:
        p = subprocess.run([str(driver), short, long_spec(longs), argv0, *args], capture_output=True, text=True,
                           check=True, env={"LC_ALL": "C"})
        want = (p.stdout, p.stderr)
        assert ours(table, argv0, args) == want, (table, args)
