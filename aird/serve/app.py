"""The HTTP service: ``create_app(settings) -> FastAPI``; every endpoint calls the Python verbs.

Images arrive as multipart file uploads (``curl -F images=@photo.jpg``), the form's other fields are
the verbs' options. Work that touches the model or a gallery file runs in a bounded pool of threads
(``aird.serve.pool``); the event loop only parses, authenticates and answers. Every error is a JSON
body ``{"error": {"code": ..., "reason": ...}}`` with the status below:

====  =====================================================================================
401   ``unauthorized``: no API key, or an unknown one
403   ``forbidden``: the key may not touch this gallery
404   ``unknown_gallery``, ``unknown_person``, ``not_found``
409   ``model_mismatch`` (the gallery was made by another model), ``gallery_error``
413   ``body_too_large`` (``max_body_mb``), ``image_too_large`` (``max_pixels``: decompression bombs
      are refused from the image's header, before decoding)
422   ``bad_image`` (zero-byte, truncated, not an image, too small), ``no_face``, ``too_many_faces``
      (``max_faces`` per request), ``too_many_images``, ``bad_request`` (a field out of range)
503   ``busy``: every worker busy and the queue full; ``Retry-After`` says when to try again
====  =====================================================================================
"""

import io
import logging
import threading
import warnings
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from aird import __version__
from aird.data.inputs import read_image
from aird.errors import AirdError, ConfigError, DataError, OutputError
from aird.gallery import Gallery, GalleryError, check_person_name
from aird.io import check_writable_folder
from aird.recognizer import MAX_UPSAMPLE, Recognizer, load
from aird.results import NoFaceError, TooManyFacesError
from aird.serve.keys import KeyEntry, KeyStore
from aird.serve.pool import PoolFull, WorkerPool
from aird.serve.settings import GALLERY_SUFFIX, ServeSettings, check_gallery_name

log = logging.getLogger("aird.serve")
STATIC = Path(__file__).resolve().parent / "static"
MAX_TOP_K = 100


class ApiError(Exception):
    """An answer other than 2xx, with the code and reason of its JSON body."""

    def __init__(self, status: int, code: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.code, self.reason, self.headers = status, code, reason, headers


def error_response(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "reason": reason}}, status_code=status, headers=headers)


def _aird_error(exc: AirdError) -> ApiError:
    """The status and code of an error the verbs raise (their message is the reason)."""
    for kind, status, code in (
        (TooManyFacesError, 422, "too_many_faces"),
        (NoFaceError, 422, "no_face"),
        (DataError, 422, "bad_image"),
        (GalleryError, 409, "gallery_error"),
        (ConfigError, 422, "bad_request"),
        (OutputError, 500, "storage_error"),
    ):
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return ApiError(500, "internal_error", str(exc))


# ---------------------------------------------------------------------------- the body limit


def _bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413 (from its Content-Length when it has one, else
    while it streams in), and answer nothing to a client that leaves before its body arrived.

    The body is read here, within the limit, and replayed to the app: no handler ever sees a body over
    the limit or waits on a client that is gone.
    """

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await error_response(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                return
            if declared > self.max_bytes:
                await self._too_large(scope, receive, send, declared)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left mid-body: there is no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only a disconnect can come

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Callable, send: Callable, declared: int | None) -> None:
        size = f" ({_bytes(declared)})" if declared is not None else ""
        reason = (
            f"request body{size} over this server's limit of {_bytes(self.max_bytes)}: send fewer or smaller images"
        )
        await error_response(413, "body_too_large", reason, {"Connection": "close"})(scope, receive, send)


# ---------------------------------------------------------------------------- the service


class Service:
    """The recognizer, the galleries under the data dir, the stream states, the keys and the pool."""

    def __init__(self, settings: ServeSettings, recognizer: Recognizer | None = None):
        self.settings = settings.check()
        check_writable_folder(settings.data_dir, "data dir")
        self.keys = KeyStore(settings.keys_path) if settings.auth == "keys" else None
        if self.keys is None:
            why = "--no-auth" if settings.no_auth else f"no keys file at {settings.keys_path}, loopback host"
            log.warning("aird serve: no API keys (%s): every request is allowed", why)
        if recognizer is None:
            options = {"adapt": settings.adapt} if settings.adapt else {}
            if settings.adapt_streams is not None:
                options["adapt_streams"] = settings.adapt_streams
            recognizer = load(settings.model, backend=settings.backend, **options)
        elif settings.adapt and settings.adapt != recognizer.streams.settings()["adapter"]:
            raise ConfigError(
                f"serve setting adapt={settings.adapt!r}, but the recognizer given adapts streams with "
                f"{recognizer.streams.settings()['adapter']!r}; load it with adapt={settings.adapt!r}"
            )
        elif settings.adapt_streams is not None and set(settings.adapt_streams) != (
            recognizer.streams.adapt_streams or set()
        ):
            raise ConfigError(
                f"serve setting adapt_streams={settings.adapt_streams!r}, but the recognizer given adapts "
                f"{sorted(recognizer.streams.adapt_streams or []) or 'every named stream'}; load it with "
                f"adapt_streams={settings.adapt_streams!r}"
            )
        self.recognizer = recognizer
        self.galleries_dir = settings.data_dir / "galleries"
        # Per model and mode: another --model or --adapt starts its own streams (and finds them again later).
        adapter = recognizer.streams.settings()["adapter"]
        self.streams_dir = settings.data_dir / "streams" / f"{recognizer.fingerprint}-{adapter}"
        if not recognizer.streams.load(self.streams_dir, missing_ok=True):
            recognizer.streams.reset()  # this data dir's streams: none yet
        self.pool = WorkerPool(settings.workers, settings.queue)
        self._galleries: dict[str, Gallery] = {}
        self._galleries_lock = threading.Lock()
        self._save_lock = threading.Lock()

    # -------------------------------------------------------------- pieces

    def decode(self, uploads: list[tuple[str, bytes]]) -> list[np.ndarray]:
        """Uploaded files as RGB arrays; a picture over ``max_pixels`` is refused from its header alone."""
        limit = self.settings.max_pixels
        out = []
        for name, data in uploads:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(io.BytesIO(data)) as img:  # reads the header only
                        width, height = img.size
            except Image.DecompressionBombError as exc:
                raise ApiError(413, "image_too_large", f"{name}: {exc}; this server takes at most {limit:,} pixels")
            except Exception:  # not an image, truncated, empty: read_image below says which, naming the file
                width = height = 0
            if width * height > limit:
                raise ApiError(
                    413,
                    "image_too_large",
                    f"{name}: {width}x{height} = {width * height:,} pixels; this server takes at most {limit:,} "
                    "per image: downscale it or crop the faces first",
                )
            out.append(read_image(data, name))
        return out

    def gallery(self, name: str, create: bool = False) -> Gallery:
        """The gallery ``name`` (404 when missing unless ``create``; 409 when made by another model)."""
        check_gallery_name(name)
        path = self.galleries_dir / f"{name}{GALLERY_SUFFIX}"
        if not create and not path.is_file():
            raise ApiError(
                404,
                "unknown_gallery",
                f"no gallery {name!r}: enrol someone to create it (POST /v1/galleries/{name}/people)",
            )
        with self._galleries_lock:
            gallery = self._galleries.get(name)
            if gallery is None:
                gallery = self._galleries[name] = Gallery(path, self.recognizer)
        if path.is_file():
            # The gallery's own messages say what is wrong; the client sees its name, not the server's path.
            try:
                made_by = gallery.store.meta().get("fingerprint")
            except GalleryError as exc:  # not a gallery, or damaged
                raise ApiError(409, "gallery_error", str(exc).replace(str(path), f"gallery {name!r}")) from None
            if made_by not in (None, self.recognizer.fingerprint):
                try:
                    gallery.store.check_model(self.recognizer.fingerprint, self.recognizer.name)
                except GalleryError as exc:  # names both models
                    raise ApiError(409, "model_mismatch", str(exc).replace(str(path), f"gallery {name!r}")) from None
        return gallery

    def gallery_names(self) -> list[str]:
        if not self.galleries_dir.is_dir():
            return []
        return sorted(p.name[: -len(GALLERY_SUFFIX)] for p in self.galleries_dir.glob(f"*{GALLERY_SUFFIX}"))

    def save_streams(self) -> None:
        with self._save_lock:
            self.recognizer.streams.save(self.streams_dir)

    def stream_info(self, stream: str) -> dict[str, Any]:
        info = self.recognizer.streams.show(stream).to_dict()
        info["adapter"] = self.recognizer.streams.settings()
        return info

    # -------------------------------------------------------------- verbs (run on a worker thread)

    def represent(
        self, uploads: list[tuple[str, bytes]], cropped: bool, upsample: int, stream: str | None, embeddings: bool
    ) -> dict[str, Any]:
        images = self.decode(uploads)
        faces = self.recognizer.represent(
            images, cropped=cropped, upsample=upsample, stream=stream, max_faces=self.settings.max_faces
        )
        for f in faces:
            f.source = uploads[f.image][0]
        out: dict[str, Any] = {"model": self.recognizer.name, "faces": [f.to_dict(embedding=embeddings) for f in faces]}
        if stream is not None:
            self.save_streams()
            out["stream"] = self.stream_info(stream)
        return out

    def verify(
        self,
        a: tuple[str, bytes],
        b: tuple[str, bytes],
        far: float,
        threshold: float | None,
        cropped: tuple[bool, bool],
        upsample: int,
    ) -> dict[str, Any]:
        image_a, image_b = self.decode([a, b])
        result = self.recognizer.verify(
            image_a,
            image_b,
            far=far,
            cropped=cropped,
            threshold=threshold,
            upsample=upsample,
            max_faces=self.settings.max_faces,
        )
        result.a.source, result.b.source = a[0], b[0]
        return result.to_dict()

    def enrol(
        self, gallery: str, name: str, uploads: list[tuple[str, bytes]], cropped: bool, upsample: int
    ) -> dict[str, Any]:
        target = self.gallery(gallery, create=True)
        images = self.decode(uploads)
        faces = self.recognizer.represent(images, cropped=cropped, upsample=upsample, max_faces=self.settings.max_faces)
        for f in faces:
            f.source = uploads[f.image][0]
        return {"gallery": gallery, **target.add_faces(name, faces).to_dict()}

    def people(self, gallery: str) -> dict[str, Any]:
        people = self.gallery(gallery).list()
        return {"gallery": gallery, "model": self.recognizer.name, "people": [p.to_dict() for p in people]}

    def remove(self, gallery: str, name: str) -> dict[str, Any]:
        target = self.gallery(gallery)
        if name not in {p.name for p in target.list()}:
            raise ApiError(404, "unknown_person", f"no person {name!r} in gallery {gallery!r}")
        return {"gallery": gallery, "removed": name, "embeddings": target.remove(name)}

    def identify(
        self,
        gallery: str,
        uploads: list[tuple[str, bytes]],
        top_k: int,
        far: float,
        threshold: float | None,
        cropped: bool,
        stream: str | None,
        upsample: int,
    ) -> dict[str, Any]:
        target = self.gallery(gallery)
        images = self.decode(uploads)
        faces = self.recognizer.represent(
            images, cropped=cropped, upsample=upsample, stream=stream, max_faces=self.settings.max_faces
        )
        for f in faces:
            f.source = uploads[f.image][0]
        results = target.search(faces, top_k=top_k, far=far, threshold=threshold)
        out: dict[str, Any] = {"gallery": gallery, "results": [r.to_dict() for r in results]}
        if stream is not None:
            self.save_streams()
            out["stream"] = self.stream_info(stream)
        return out

    def reset_stream(self, stream: str) -> dict[str, Any]:
        self.recognizer.streams.reset(stream)
        self.save_streams()
        return self.stream_info(stream)

    def close(self) -> None:
        self.pool.shutdown()
        try:
            self.save_streams()
        except AirdError as exc:
            log.error("aird serve: could not save the stream states: %s", exc)
        with self._galleries_lock:
            for g in self._galleries.values():
                g.close()


# ---------------------------------------------------------------------------- authentication
# The dependencies are coroutines: they do no blocking work, and a plain function would cost each request
# a hop through the thread pool.

bearer = HTTPBearer(auto_error=False, description="an API key made by 'aird serve --add-key NAME'")


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def authenticated(
    service: Annotated[Service, Depends(get_service)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyEntry | None:
    """The caller's key (None when the server runs without keys); 401 without a known one."""
    if service.keys is None:
        return None
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401, "unauthorized", "this server needs an API key: send 'Authorization: Bearer <key>'", challenge
        )
    entry = service.keys.find(credentials.credentials)
    if entry is None:
        raise ApiError(401, "unauthorized", "unknown API key", challenge)
    return entry


async def gallery_access(
    gallery: Annotated[str, PathParam(description="gallery name: letters, digits, '.', '_', '-'")],
    key: Annotated[KeyEntry | None, Depends(authenticated)],
) -> str:
    """The gallery named in the path, when the caller's key may touch it (403 otherwise)."""
    check_gallery_name(gallery)
    if key is not None and not key.may_use(gallery):
        allowed = ", ".join(key.galleries) or "none"
        raise ApiError(403, "forbidden", f"key {key.name!r} may not use gallery {gallery!r} (it may use: {allowed})")
    return gallery


# ---------------------------------------------------------------------------- endpoints

ServiceDep = Annotated[Service, Depends(get_service)]
KeyDep = Annotated[KeyEntry | None, Depends(authenticated)]
GalleryDep = Annotated[str, Depends(gallery_access)]
Images = Annotated[list[UploadFile], File(description="image files: photos, or face crops with cropped=true")]
Cropped = Annotated[bool, Form(description="the images are ready face crops of any size (a detector's output)")]
Upsample = Annotated[
    int, Form(ge=0, le=MAX_UPSAMPLE, description="detector doublings of a photo: 1 finds ~40 px faces, 2 ~20 px")
]
Stream = Annotated[str | None, Form(description="camera name: its LR faces go through that camera's own FaceBN state")]
Far = Annotated[float, Form(gt=0, lt=1, description="false accept rate whose calibrated threshold decides")]
Threshold = Annotated[float | None, Form(ge=-1, le=1, description="decide by this cosine similarity instead of far")]

router = APIRouter()


async def _read(service: Service, files: list[UploadFile]) -> list[tuple[str, bytes]]:
    limit = service.settings.max_faces
    if len(files) > limit:
        raise ApiError(422, "too_many_images", f"{len(files)} images in one request; this server takes at most {limit}")
    out = []
    for i, f in enumerate(files):
        name = Path(f.filename or "").name or f"<upload #{i}>"
        out.append((name, await f.read()))
    return out


async def _work(service: Service, fn: Callable, *args: Any) -> Any:
    try:
        return await service.pool.run(fn, *args)
    except PoolFull:
        raise ApiError(
            503,
            "busy",
            f"all {service.settings.workers} workers are busy and {service.settings.queue} requests wait: "
            f"try again in {service.settings.retry_after_s} s",
            {"Retry-After": str(service.settings.retry_after_s)},
        ) from None


@router.get("/healthz", tags=["service"])
async def healthz(service: ServiceDep) -> dict[str, Any]:
    """Liveness and load; needs no key."""
    rec = service.recognizer
    return {
        "status": "ok",
        "version": __version__,
        "model": rec.name,
        "fingerprint": rec.fingerprint,
        "backend": rec.backend,
        "adapt": rec.streams.settings()["adapter"],
        "adapt_streams": rec.streams.settings().get("adapt_streams"),  # None: every named stream adapts
        "auth": "keys" if service.keys is not None else "off",
        "workers": service.settings.workers,
        "queue": service.settings.queue,
        "in_flight": service.pool.in_flight,
    }


@router.get("/v1/info", tags=["service"])
async def info(service: ServiceDep, key: KeyDep) -> dict[str, Any]:
    """The model (its card and calibrated thresholds), the stream adaptation and this server's limits."""
    s = service.settings
    limits = {"max_body_mb": s.max_body_mb, "max_pixels": s.max_pixels, "max_faces": s.max_faces}
    return {"recognizer": service.recognizer.info(), "limits": limits, "workers": s.workers, "queue": s.queue}


@router.post("/v1/represent", tags=["faces"])
async def represent(
    service: ServiceDep,
    key: KeyDep,
    images: Images,
    cropped: Cropped = False,
    upsample: Upsample = 1,
    stream: Stream = None,
    embeddings: Annotated[bool, Form(description="include the 128-D unit embeddings")] = True,
) -> dict[str, Any]:
    """Every face of every image: found or not (and why), route, size, box, embedding."""
    uploads = await _read(service, images)
    return await _work(service, service.represent, uploads, cropped, upsample, stream, embeddings)


@router.post("/v1/verify", tags=["faces"])
async def verify(
    service: ServiceDep,
    key: KeyDep,
    a: Annotated[UploadFile, File(description="first image")],
    b: Annotated[UploadFile, File(description="second image")],
    far: Far = 1e-3,
    threshold: Threshold = None,
    cropped_a: Annotated[bool, Form(description="image a is a ready face crop")] = False,
    cropped_b: Annotated[bool, Form(description="image b is a ready face crop")] = False,
    upsample: Upsample = 1,
) -> dict[str, Any]:
    """Are the largest faces of a and b one person? (422 no_face when an image holds none.)"""
    ua, ub = await _read(service, [a, b])
    return await _work(service, service.verify, ua, ub, far, threshold, (cropped_a, cropped_b), upsample)


@router.get("/v1/galleries", tags=["galleries"])
async def galleries(service: ServiceDep, key: KeyDep) -> dict[str, Any]:
    """The galleries this key may use."""
    names = [g for g in service.gallery_names() if key is None or key.may_use(g)]
    return {"galleries": names}


@router.post("/v1/galleries/{gallery}/people", tags=["galleries"], status_code=201)
async def enrol(
    service: ServiceDep,
    gallery: GalleryDep,
    name: Annotated[str, Form(description="the person's name")],
    images: Images,
    cropped: Cropped = False,
    upsample: Upsample = 1,
) -> dict[str, Any]:
    """Enrol a person from photos (the largest face of each; never adapted). Creates the gallery."""
    check_person_name(name)
    uploads = await _read(service, images)
    return await _work(service, service.enrol, gallery, name, uploads, cropped, upsample)


@router.get("/v1/galleries/{gallery}/people", tags=["galleries"])
async def people(service: ServiceDep, gallery: GalleryDep) -> dict[str, Any]:
    """Everyone enrolled: embedding counts by route, enrolment times."""
    return await _work(service, service.people, gallery)


@router.delete("/v1/galleries/{gallery}/people/{name}", tags=["galleries"])
async def remove(service: ServiceDep, gallery: GalleryDep, name: str) -> dict[str, Any]:
    """Delete a person and all their embeddings."""
    return await _work(service, service.remove, gallery, name)


@router.post("/v1/galleries/{gallery}/identify", tags=["galleries"])
async def identify(
    service: ServiceDep,
    gallery: GalleryDep,
    probes: Annotated[list[UploadFile], File(description="probe images: photos, or face crops with cropped=true")],
    top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K, description="people listed per face")] = 5,
    far: Far = 1e-3,
    threshold: Threshold = None,
    cropped: Cropped = False,
    stream: Stream = None,
    upsample: Upsample = 1,
) -> dict[str, Any]:
    """Who each probe face is (open set: "unknown" below the calibrated threshold), with the top-k people.
    Name a ``stream`` (a camera) to embed its LR faces through that camera's FaceBN state."""
    uploads = await _read(service, probes)
    return await _work(service, service.identify, gallery, uploads, top_k, far, threshold, cropped, stream, upsample)


@router.get("/v1/streams", tags=["streams"])
async def streams(service: ServiceDep, key: KeyDep) -> dict[str, Any]:
    """Every camera seen, with its adaptation state, and the adapter in use."""
    states = service.recognizer.streams
    return {"adapter": states.settings(), "streams": [states.show(n).to_dict() for n in states.names()]}


@router.get("/v1/streams/{camera}", tags=["streams"])
async def stream_show(service: ServiceDep, key: KeyDep, camera: str) -> dict[str, Any]:
    """A camera's FaceBN state: faces and batches seen, how far its statistics moved (``shift``)."""
    return service.stream_info(camera)


@router.delete("/v1/streams/{camera}", tags=["streams"])
async def stream_reset(service: ServiceDep, key: KeyDep, camera: str) -> dict[str, Any]:
    """Forget a camera's adaptation: it restarts from the training statistics."""
    return await _work(service, service.reset_stream, camera)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


# ---------------------------------------------------------------------------- the app


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def create_app(settings: ServeSettings | None = None, recognizer: Recognizer | None = None) -> FastAPI:
    """The service as an ASGI app: loads the model (or takes ``recognizer``) and each camera's saved
    stream state now, so that a bad setting or model file fails here, before anything is served."""
    settings = settings or ServeSettings()
    service = Service(settings, recognizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="aird",
        version=__version__,
        summary="Low-resolution face recognition: enrol photos, identify tiny faces, adapt to each camera",
        lifespan=lifespan,
    )
    app.state.service = service
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.reason, exc.headers)

    @app.exception_handler(AirdError)
    async def on_aird_error(request: Request, exc: AirdError) -> JSONResponse:
        err = _aird_error(exc)
        return error_response(err.status, err.code, err.reason)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "bad_request", _validation_reason(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("aird serve: %s %s failed", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")

    return app


__all__ = ["ApiError", "BodyLimit", "Service", "create_app"]
