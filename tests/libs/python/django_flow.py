"""Django sessions on the cache backend, the cache being django-redis, used unchanged against
a tandem pair.

    python django_flow.py        (env TANDEM_A, TANDEM_B = host:port)

Two cache aliases, `a` and `b`, point at node A and node B; SESSION_CACHE_ALIAS picks the one
a request's session goes through (as two web servers of one site would each use their local
node). The user logs in through A, reads and updates through B, a short session expires, and
the user logs out through B. django-redis raises on a refused command: the request fails.
"""

import time

import django
from django.conf import settings
from django.urls import path

from common import expect, nodes

(HA, PA), (HB, PB) = nodes()


def cache(host, port):
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{host}:{port}/0",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
        },
    }


def login(request):
    request.session["user"] = request.GET["user"]
    request.session["roles"] = ["reader"]
    if "ttl" in request.GET:
        request.session.set_expiry(int(request.GET["ttl"]))
    return JsonResponse({"ok": True})


def me(request):
    return JsonResponse({"user": request.session.get("user"), "theme": request.session.get("theme")})


def update(request):
    request.session["theme"] = request.GET["theme"]
    return JsonResponse({"ok": True})


def logout(request):
    request.session.flush()
    return JsonResponse({"ok": True})


urlpatterns = [
    path("login", login),
    path("me", me),
    path("update", update),
    path("logout", logout),
]

settings.configure(
    DEBUG=False,
    SECRET_KEY="tandem-test-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["testserver"],
    INSTALLED_APPS=["django.contrib.sessions"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    CACHES={"default": cache(HA, PA), "a": cache(HA, PA), "b": cache(HB, PB)},
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
    SESSION_COOKIE_AGE=600,
)
django.setup()

from django.http import JsonResponse  # noqa: E402  (needs settings)
from django.test import Client  # noqa: E402
from django.test.utils import override_settings, setup_test_environment  # noqa: E402


def call(client, node, method, url):
    with override_settings(SESSION_CACHE_ALIAS=node):
        r = getattr(client, method)(url)
    return r.status_code, r.json() if r.status_code == 200 else r.content


def main():
    setup_test_environment()
    alice = Client(raise_request_exception=True)
    expect("login through A", *call(alice, "a", "post", "/login?user=alice"), 200, {"ok": True})
    expect("read through B", *call(alice, "b", "get", "/me"), 200, {"user": "alice", "theme": None})
    expect("update through B", *call(alice, "b", "post", "/update?theme=dark"), 200, {"ok": True})
    expect("read the update through A", *call(alice, "a", "get", "/me"), 200, {"user": "alice", "theme": "dark"})

    bob = Client(raise_request_exception=True)
    expect("short login through A", *call(bob, "a", "post", "/login?user=bob&ttl=2"), 200, {"ok": True})
    expect("short session read through B", *call(bob, "b", "get", "/me"), 200, {"user": "bob", "theme": None})
    time.sleep(3.2)
    expect("expired through B", *call(bob, "b", "get", "/me"), 200, {"user": None, "theme": None})

    expect("logout through B", *call(alice, "b", "post", "/logout"), 200, {"ok": True})
    expect("logged out through A", *call(alice, "a", "get", "/me"), 200, {"user": None, "theme": None})
    print("PASS django-redis")


if __name__ == "__main__":
    main()
