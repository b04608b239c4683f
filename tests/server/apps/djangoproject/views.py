import hashlib
import json
import os
import time

from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

# The streaming view waits for the test to create a file between its chunks; this bounds the
# wait so a failed test cannot pin a server thread forever.
RELEASE_WAIT_SECONDS = 30.0


@require_GET
def search(request):
    return JsonResponse(
        {"q": request.GET.get("q"), "tags": request.GET.getlist("tag"), "path": request.path}
    )


@require_http_methods(["GET", "POST"])
def form(request):
    if request.method == "GET":
        # get_token() makes CsrfViewMiddleware set the csrftoken cookie on this response.
        return JsonResponse({"csrf": get_token(request)})
    fields = {k: request.POST.getlist(k) for k in request.POST if k != "csrfmiddlewaretoken"}
    return JsonResponse({"fields": fields, "content_type": request.content_type})


@require_POST
def upload(request):
    if "upload" not in request.FILES:
        return HttpResponseBadRequest("no file named 'upload'")
    upload = request.FILES["upload"]
    digest = hashlib.sha256()
    size = 0
    for chunk in upload.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse(
        {
            "name": upload.name,
            "content_type": upload.content_type,
            "size": size,
            "sha256": digest.hexdigest(),
            "note": request.POST.get("note"),
        }
    )


@csrf_exempt
@require_POST
def json_api(request):
    if request.content_type != "application/json":
        return HttpResponseBadRequest("expected application/json")
    payload = json.loads(request.body)
    return JsonResponse(
        {"total": sum(payload["numbers"]), "name": payload["name"].upper(), "echo": payload}, status=201
    )


def _wait_for_file(path):
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@require_GET
def stream(request):
    who, release = request.GET["who"], request.GET["release"]

    def generate():
        yield f"first chunk for {who}\n"
        if not _wait_for_file(release):
            yield "gave up waiting\n"
            return
        for i in range(3):
            yield f"chunk {i}\n"

    return StreamingHttpResponse(generate(), content_type="text/plain")


@require_GET
def login(request):
    response = redirect("whoami")
    response.set_cookie("user", request.GET["user"], httponly=True, samesite="Lax")
    return response


@require_GET
def whoami(request):
    return JsonResponse({"user": request.COOKIES.get("user")})


def boom(request):
    raise RuntimeError("boom from django")
