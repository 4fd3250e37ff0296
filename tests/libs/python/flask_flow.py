"""Flask with Flask-Session on redis-py, used unchanged against a tandem pair.

    python flask_flow.py        (env TANDEM_A, TANDEM_B = host:port)

Two copies of one Flask app store their sessions through node A and node B: the user logs in
through A, reads and updates the session through B, a short session expires, and the user
logs out through B. A refused command raises in redis-py, which the app turns into a 500.
"""

import time
from datetime import timedelta

import redis
from flask import Flask, jsonify, request, session
from flask_session import Session

from common import expect, fail, nodes


def make_app(host, port, lifetime):
    app = Flask(f"app-{port}")
    app.config.update(
        SECRET_KEY="tandem-test-secret",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(host=host, port=port),
        SESSION_PERMANENT=True,
        PERMANENT_SESSION_LIFETIME=lifetime,
    )
    Session(app)

    @app.post("/login")
    def login():
        session["user"] = request.args["user"]
        session["roles"] = ["reader"]
        return jsonify(ok=True)

    @app.get("/me")
    def me():
        return jsonify(user=session.get("user"), theme=session.get("theme"))

    @app.post("/update")
    def update():
        session["theme"] = request.args["theme"]
        return jsonify(ok=True)

    @app.post("/logout")
    def logout():
        session.clear()
        return jsonify(ok=True)

    return app


def call(app, method, path, cookie=None):
    client = app.test_client()
    if cookie:
        name, _, value = cookie.partition("=")
        client.set_cookie(name, value)
    r = client.open(path, method=method)
    set_cookie = r.headers.get("Set-Cookie")
    return r.status_code, r.get_json(silent=True), set_cookie.split(";")[0] if set_cookie else cookie


def main():
    (ha, pa), (hb, pb) = nodes()
    long, short = timedelta(minutes=10), timedelta(seconds=2)
    a, b = make_app(ha, pa, long), make_app(hb, pb, long)

    st, body, cookie = call(a, "POST", "/login?user=alice")
    expect("login through A", st, body, 200, {"ok": True})
    if not cookie:
        fail("login set no cookie")
    st, body, _ = call(b, "GET", "/me", cookie)
    expect("read through B", st, body, 200, {"user": "alice", "theme": None})
    st, body, _ = call(b, "POST", "/update?theme=dark", cookie)
    expect("update through B", st, body, 200, {"ok": True})
    st, body, _ = call(a, "GET", "/me", cookie)
    expect("read the update through A", st, body, 200, {"user": "alice", "theme": "dark"})

    sa, sb = make_app(ha, pa, short), make_app(hb, pb, short)
    st, body, bob = call(sa, "POST", "/login?user=bob")
    expect("short login through A", st, body, 200, {"ok": True})
    st, body, _ = call(sb, "GET", "/me", bob)
    expect("short session read through B", st, body, 200, {"user": "bob", "theme": None})
    time.sleep(3.2)
    st, body, _ = call(sb, "GET", "/me", bob)
    expect("expired through B", st, body, 200, {"user": None, "theme": None})

    st, body, _ = call(b, "POST", "/logout", cookie)
    expect("logout through B", st, body, 200, {"ok": True})
    st, body, _ = call(a, "GET", "/me", cookie)
    expect("logged out through A", st, body, 200, {"user": None, "theme": None})
    print("PASS flask-session")


if __name__ == "__main__":
    main()
