"""Real frameworks behind ``stogie.wsgi.Server``: a Flask app and a Django project serve a
page and take form posts (urlencoded and multipart), checked with ``requests``."""

import hashlib
import sys
import types

import pytest

requests = pytest.importorskip("requests")


def base_url(server):
    host, port = server.bind_addr
    return f"http://{host}:{port}"


# --- Flask ---------------------------------------------------------------------------------


@pytest.fixture
def flask_app():
    flask = pytest.importorskip("flask")
    app = flask.Flask("stogie_flask_test")

    @app.get("/")
    def index():
        return (
            "<!DOCTYPE html><title>Flask on stogie</title>"
            "<form method=post action=/form><input name=name></form>"
        )

    @app.post("/form")
    def form():
        files = {
            name: {
                "filename": f.filename,
                "content_type": f.content_type,
                "sha256": hashlib.sha256(f.read()).hexdigest(),
            }
            for name, f in flask.request.files.items()
        }
        return flask.jsonify(
            form=flask.request.form.to_dict(flat=False),
            files=files,
            content_type=flask.request.mimetype,
        )

    @app.get("/stream")
    def stream():
        def generate():
            for i in range(5):
                yield f"part {i}\n"

        return flask.Response(generate(), mimetype="text/plain")

    @app.get("/missing-on-purpose")
    def not_found():
        flask.abort(404)

    return app


def test_flask_page(serve, flask_app):
    srv = serve(flask_app)
    resp = requests.get(base_url(srv) + "/", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "<title>Flask on stogie</title>" in resp.text
    assert resp.headers["Server"] == srv.server_name
    assert requests.get(base_url(srv) + "/missing-on-purpose", timeout=5).status_code == 404


def test_flask_urlencoded_form(serve, flask_app):
    srv = serve(flask_app)
    data = {"name": "Zoë", "tags": ["a", "b"], "empty": ""}
    resp = requests.post(base_url(srv) + "/form", data=data, timeout=5)
    assert resp.status_code == 200
    got = resp.json()
    assert got["content_type"] == "application/x-www-form-urlencoded"
    assert got["form"] == {"name": ["Zoë"], "tags": ["a", "b"], "empty": [""]}
    assert got["files"] == {}


def test_flask_multipart_form(serve, flask_app):
    srv = serve(flask_app)
    upload = bytes(range(256)) * 1024  # 256 KiB: more than is read ahead of the app
    resp = requests.post(
        base_url(srv) + "/form",
        data={"title": "a file"},
        files={"doc": ("report.bin", upload, "application/octet-stream")},
        timeout=5,
    )
    assert resp.status_code == 200
    got = resp.json()
    assert got["content_type"] == "multipart/form-data"
    assert got["form"] == {"title": ["a file"]}
    assert got["files"] == {
        "doc": {
            "filename": "report.bin",
            "content_type": "application/octet-stream",
            "sha256": hashlib.sha256(upload).hexdigest(),
        }
    }


def test_flask_chunked_upload(serve, flask_app):
    srv = serve(flask_app)

    def body():
        yield b"name=chunked"
        yield b"&more=yes"

    resp = requests.post(
        base_url(srv) + "/form",
        data=body(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert resp.status_code == 200
    assert resp.json()["form"] == {"name": ["chunked"], "more": ["yes"]}


def test_flask_streamed_response(serve, flask_app):
    srv = serve(flask_app)
    resp = requests.get(base_url(srv) + "/stream", timeout=5)
    assert resp.status_code == 200
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert resp.text == "".join(f"part {i}\n" for i in range(5))


def test_flask_keepalive_session(serve, flask_app):
    srv = serve(flask_app)
    with requests.Session() as session:
        for i in range(5):
            resp = session.post(base_url(srv) + "/form", data={"i": str(i)}, timeout=5)
            assert resp.json()["form"] == {"i": [str(i)]}
            assert resp.headers.get("Connection", "").lower() != "close"


# --- Django --------------------------------------------------------------------------------

DJANGO_URLCONF = "stogie_test_django_urls"


def _django_views(django):
    from django.http import HttpResponse, JsonResponse

    def index(request):
        return HttpResponse(
            "<!DOCTYPE html><title>Django on stogie</title>"
            f"<p>method={request.method} path={request.path} q={request.GET.get('q', '')}</p>",
            content_type="text/html; charset=utf-8",
        )

    def form(request):
        if request.method != "POST":
            return HttpResponse("POST only", status=405)
        files = {
            name: {
                "filename": f.name,
                "content_type": f.content_type,
                "size": f.size,
                "sha256": hashlib.sha256(f.read()).hexdigest(),
            }
            for name, f in request.FILES.items()
        }
        return JsonResponse(
            {
                "form": {k: request.POST.getlist(k) for k in request.POST},
                "files": files,
                "content_type": request.content_type,
            }
        )

    return index, form


@pytest.fixture(scope="module")
def django_app():
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="stogie-tests-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=DJANGO_URLCONF,
            MIDDLEWARE=["django.middleware.common.CommonMiddleware"],  # no CSRF middleware
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.urls import path

    index, form = _django_views(django)
    urls = types.ModuleType(DJANGO_URLCONF)
    urls.urlpatterns = [path("", index), path("form/", form)]
    sys.modules[DJANGO_URLCONF] = urls
    try:
        yield get_wsgi_application()
    finally:
        sys.modules.pop(DJANGO_URLCONF, None)


def test_django_page(serve, django_app):
    srv = serve(django_app)
    resp = requests.get(base_url(srv) + "/?q=hello%20world", timeout=5)
    assert resp.status_code == 200
    assert "<title>Django on stogie</title>" in resp.text
    assert "method=GET path=/ q=hello world" in resp.text
    assert requests.get(base_url(srv) + "/nowhere/", timeout=5).status_code == 404


def test_django_urlencoded_form(serve, django_app):
    srv = serve(django_app)
    data = {"name": "Zoë", "tags": ["a", "b"]}
    resp = requests.post(base_url(srv) + "/form/", data=data, timeout=5)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["content_type"] == "application/x-www-form-urlencoded"
    assert got["form"] == {"name": ["Zoë"], "tags": ["a", "b"]}
    assert got["files"] == {}


def test_django_multipart_form(serve, django_app):
    srv = serve(django_app)
    upload = hashlib.sha256(b"seed").digest() * 10000  # 320 kB
    resp = requests.post(
        base_url(srv) + "/form/",
        data={"title": "a file", "note": "ünïcode"},
        files={"doc": ("photo.jpg", upload, "image/jpeg")},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["content_type"] == "multipart/form-data"
    assert got["form"] == {"title": ["a file"], "note": ["ünïcode"]}
    assert got["files"] == {
        "doc": {
            "filename": "photo.jpg",
            "content_type": "image/jpeg",
            "size": len(upload),
            "sha256": hashlib.sha256(upload).hexdigest(),
        }
    }


def test_django_common_middleware_redirect(serve, django_app):
    srv = serve(django_app)
    resp = requests.get(base_url(srv) + "/form", timeout=5, allow_redirects=False)
    assert resp.status_code == 301
    assert resp.headers["Location"].endswith("/form/")
