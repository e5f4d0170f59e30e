"""Localized messages for API errors and task errors (`?language=en|zh|ko|ja`).

English and Chinese cover every key; Korean and Japanese cover the common ones and fall back to
English. Templates use `str.format` fields; `{param}` is the offending field's name.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "zh", "ko", "ja")

_EN: dict[str, str] = {
    # API errors
    "invalid_request": "Invalid request parameters",
    "payload_too_large": "Request body too large (maximum {limit} bytes)",
    "authentication": "Invalid authentication credentials",
    "payment_required": "Insufficient balance. Please top up your account",
    "permission": "Access forbidden. You don't have permission to access this resource",
    "not_found": "Not found",
    "task_not_found": "Task {task_id} not found",
    "route_not_found": "No route {method} {path}",
    "method_not_allowed": "Method {method} is not allowed on {path}",
    "conflict": "Conflict",
    "idempotency_conflict": (
        "Idempotency-Key {key!r} was already used with a different request body; "
        "use a new key for a new request"
    ),
    "idempotency_key_invalid": "Idempotency-Key must be 1-191 visible ASCII characters without spaces",
    "link_expired": "This link has expired",
    "link_invalid": "This link is invalid: its signature does not match",
    "range_invalid": "Requested range is not satisfiable",
    "rate_limited": "Rate limit exceeded. Please try again later",
    "server_error": "Internal server error. Please try again later",
    "bad_gateway": "Bad gateway. The server is temporarily unavailable",
    "invalid_json": "Request body must be a JSON object: {detail}",
    "language_invalid": "language must be one of: en, zh, ko, ja",
    "response_version_invalid": (
        "X-APIMart-Response-Version must be a date such as 2026-07-27 (that date or later selects the newer "
        "response shape)"
    ),
    "prefer_wait_invalid": "Prefer: wait must be whole seconds from 0 to {limit}, e.g. Prefer: wait=30",
    "no_provider": "No provider is available for model {model} here; the operator must enable one",
    # Validation rules (param names the field)
    "field_required": "{param} is required",
    "field_unknown": "{param} is not a parameter of model {model}; check its spelling",
    "model_required": "model is required",
    "model_unknown": "model {model!r} is not supported; supported models: {models}",
    "type_string": "{param} must be a string",
    "type_integer": "{param} must be an integer (a plain number, not quoted)",
    "type_boolean": "{param} must be true or false",
    "type_array": "{param} must be an array",
    "string_empty": "{param} must not be empty",
    "string_too_long": "{param} must be at most {max} characters (got {actual})",
    "number_range": "{param} must be between {min} and {max} (got {actual})",
    "number_choice": "{param} must be one of {choices} (got {actual})",
    "choice": "{param} must be one of {choices} (got {actual!r})",
    "array_length": "{param} must hold {min} to {max} items (got {actual})",
    "url_invalid": "{param} must be an http(s) URL (got {actual!r})",
    "transition_pair": "first_frame_image and last_frame_image must be given together (missing {param})",
    "transition_duration": "duration must be 5 or 8 for first/last-frame transition (got {actual})",
    "multi_clip_mode": (
        "generate_multi_clip_switch is only available for text-to-video and image-to-video (mode is {mode})"
    ),
    "extend_source_missing": "extend_from_task_id {actual!r} is not a task of this API key",
    "extend_source_model": "extend_from_task_id must name a pixverse-v6 task (it is a {model} task)",
    "extend_source_state": "extend_from_task_id must name a completed task (it is {status})",
    "upload_missing_file": "multipart field 'file' is required",
    "upload_format": "file must be a JPEG, PNG, WebP or GIF image (detected: {detected})",
    "upload_too_large": "file is larger than {limit_mb} MB",
    # Task errors (task.error.message)
    "image_fetch_failed": "Could not download {param}: {detail}",
    "image_url_refused": "{param} was not fetched: {detail}; only public http(s) URLs are allowed",
    "image_too_many_pixels": "{param} is {width}x{height}, more than {max_pixels} pixels",
    "image_too_large": "{param} is larger than {limit_mb} MB",
    "inputs_too_large": "The input images together exceed {limit_mb} MB",
    "image_format": "{param} must be a {formats} image (detected: {detected})",
    "image_too_small": "{param} must be at least {min}x{min} pixels (got {width}x{height})",
    "image_aspect": "{param} aspect ratio must be between 1:4 and 4:1 (got {width}x{height})",
    "image_unreadable": "{param} is not a readable image",
    "extend_source_unavailable": "The video of extend_from_task_id is no longer available",
    "render_failed": "Rendering failed: {detail}",
    "task_error": "vidgate could not carry the task through ({detail}); nothing was charged",
    "worker_lost": "The task was interrupted {attempts} times and was stopped",
    "engine_out_of_memory": "The GPU ran out of memory generating this video; try a shorter or smaller one",
    "engine_failed": "The video engine failed: {detail}",
    "engine_mode_unavailable": (
        "This server's {engine} engine cannot generate {mode} videos ({setting} is not set)"
    ),
    "cancelled": "Cancelled by user",
    # Upstream relays (task.error.message); {upstream} is the provider's name.
    "content_policy_violation": "{upstream} refused the request or its result for content policy reasons",
    "upstream_quota_exceeded": "The {upstream} account behind this gateway is out of credits or quota",
    "upstream_auth_failed": "The gateway's {upstream} credentials were refused; the operator must fix them",
    "invalid_image": "{upstream} could not use an input image: {detail}",
    "upstream_rejected": "{upstream} rejected the request: {detail}",
    "upstream_failed": "{upstream} failed to generate the video ({detail})",
    "upstream_cancelled": "The job was cancelled at {upstream}",
    "upstream_busy": "{upstream} stayed busy until the task's deadline ({detail})",
    "upstream_unavailable": "{upstream} could not be reached until the task's deadline ({detail})",
    "deadline_exceeded": "The task did not finish before its deadline (last state at {upstream}: {detail})",
    "upstream_result_missing": "{upstream} reported success without a video",
    "upstream_result_expired": "The video's link at {upstream} expired before it could be copied ({detail})",
    "upstream_result_unavailable": "The video could not be downloaded from {upstream} ({detail})",
    "upstream_result_too_large": "The video from {upstream} is larger than {limit_mb} MB",
    "upstream_result_invalid": "The file from {upstream} is not a playable video ({detail})",
    "submit_interrupted": (
        "The submit to {upstream} was interrupted and whether it was accepted cannot be known; "
        "nothing was charged, please submit again"
    ),
    "extend_source_provider": (
        "extend_from_task_id was served by {provider}; extension at {upstream} needs a source made there"
    ),
    "callback_signature": "The callback signature is missing or does not verify",
    "cancel_terminal": "Task {task_id} is already {status} and cannot be cancelled",
    "cursor_invalid": "cursor is not a value this API returned",
    "param_invalid": "{param} is invalid: {detail}",
    "model_not_allowed": "This API key may not use model {model}",
    "too_many_in_flight": (
        "This API key already has {limit} tasks pending or processing; wait for one to finish"
    ),
    "not_ready": "Not ready: {detail}",
    "rate_limited_rpm": "This API key is limited to {limit} requests per minute; retry in {retry_after} s",
    "admin_token_invalid": "Invalid admin token: send Authorization: Bearer <VIDGATE_ADMIN_TOKEN>",
    "admin_field_unknown": "{param} is not a field of this request; fields: {fields}",
    "key_not_found": "API key {key_id} not found",
    "callback_url_refused": "{param} was refused: {detail}; callbacks go only to public http(s) hosts",
    "delivery_not_found": "Task {task_id} has no webhook delivery {delivery_id}",
}

_ZH: dict[str, str] = {
    "invalid_request": "请求参数无效",
    "payload_too_large": "请求体过大（最大 {limit} 字节）",
    "authentication": "身份验证凭据无效",
    "payment_required": "账户余额不足，请充值后再试",
    "permission": "禁止访问，您无权访问此资源",
    "not_found": "未找到",
    "task_not_found": "未找到任务 {task_id}",
    "route_not_found": "不存在的路由 {method} {path}",
    "method_not_allowed": "{path} 不支持 {method} 方法",
    "conflict": "冲突",
    "idempotency_conflict": "Idempotency-Key {key!r} 已用于另一个请求体；新请求请使用新的键",
    "idempotency_key_invalid": "Idempotency-Key 必须是 1-191 个不含空格的可见 ASCII 字符",
    "link_expired": "链接已过期",
    "link_invalid": "链接无效：签名不匹配",
    "range_invalid": "请求的范围无法满足",
    "rate_limited": "请求频率超限，请稍后再试",
    "server_error": "服务器内部错误，请稍后再试",
    "bad_gateway": "网关错误，服务暂时不可用",
    "invalid_json": "请求体必须是 JSON 对象：{detail}",
    "language_invalid": "language 必须是 en、zh、ko、ja 之一",
    "response_version_invalid": (
        "X-APIMart-Response-Version 必须是日期，例如 2026-07-27（该日期及之后使用新的响应格式）"
    ),
    "prefer_wait_invalid": "Prefer 头的 wait 必须是 0 到 {limit} 之间的整数秒，例如 Prefer: wait=30",
    "no_provider": "此处没有可用于模型 {model} 的服务提供方，需要运维启用",
    "field_required": "{param} 为必填项",
    "field_unknown": "{param} 不是模型 {model} 的参数，请检查拼写",
    "model_required": "model 为必填项",
    "model_unknown": "不支持模型 {model!r}；支持的模型：{models}",
    "type_string": "{param} 必须是字符串",
    "type_integer": "{param} 必须是整数（不加引号的数字）",
    "type_boolean": "{param} 必须是 true 或 false",
    "type_array": "{param} 必须是数组",
    "string_empty": "{param} 不能为空",
    "string_too_long": "{param} 最多 {max} 个字符（当前 {actual}）",
    "number_range": "{param} 必须在 {min} 到 {max} 之间（当前 {actual}）",
    "number_choice": "{param} 必须是 {choices} 之一（当前 {actual}）",
    "choice": "{param} 必须是 {choices} 之一（当前 {actual!r}）",
    "array_length": "{param} 必须包含 {min} 到 {max} 项（当前 {actual}）",
    "url_invalid": "{param} 必须是 http(s) 链接（当前 {actual!r}）",
    "transition_pair": "first_frame_image 与 last_frame_image 必须同时提供（缺少 {param}）",
    "transition_duration": "首尾帧过渡模式的 duration 只能是 5 或 8（当前 {actual}）",
    "multi_clip_mode": "generate_multi_clip_switch 仅适用于文生视频和图生视频（当前模式 {mode}）",
    "extend_source_missing": "extend_from_task_id {actual!r} 不是此 API 密钥的任务",
    "extend_source_model": "extend_from_task_id 必须是 pixverse-v6 任务（实际为 {model} 任务）",
    "extend_source_state": "extend_from_task_id 必须是已完成的任务（当前状态 {status}）",
    "upload_missing_file": "缺少 multipart 字段 file",
    "upload_format": "文件必须是 JPEG、PNG、WebP 或 GIF 图片（检测到：{detected}）",
    "upload_too_large": "文件超过 {limit_mb} MB",
    "image_fetch_failed": "无法下载 {param}：{detail}",
    "image_url_refused": "未下载 {param}：{detail}；只允许公网 http(s) 链接",
    "image_too_many_pixels": "{param} 为 {width}x{height}，超过 {max_pixels} 像素",
    "image_too_large": "{param} 超过 {limit_mb} MB",
    "inputs_too_large": "输入图片总大小超过 {limit_mb} MB",
    "image_format": "{param} 必须是 {formats} 图片（检测到：{detected}）",
    "image_too_small": "{param} 至少需要 {min}x{min} 像素（当前 {width}x{height}）",
    "image_aspect": "{param} 宽高比必须在 1:4 与 4:1 之间（当前 {width}x{height}）",
    "image_unreadable": "{param} 不是可读取的图片",
    "extend_source_unavailable": "extend_from_task_id 对应的视频已不可用",
    "render_failed": "渲染失败：{detail}",
    "task_error": "vidgate 无法完成该任务（{detail}）；未产生费用",
    "worker_lost": "任务已被中断 {attempts} 次，已停止",
    "engine_out_of_memory": "生成此视频时 GPU 显存不足；请尝试更短或更小的视频",
    "engine_failed": "视频引擎出错：{detail}",
    "engine_mode_unavailable": "本服务器的 {engine} 引擎无法生成 {mode} 模式的视频（未设置 {setting}）",
    "cancelled": "已被用户取消",
    "content_policy_violation": "{upstream} 因内容安全策略拒绝了该请求或其结果",
    "upstream_quota_exceeded": "本网关使用的 {upstream} 账户额度或积分不足",
    "upstream_auth_failed": "网关的 {upstream} 凭据被拒绝，需要运维修复",
    "invalid_image": "{upstream} 无法使用输入图片：{detail}",
    "upstream_rejected": "{upstream} 拒绝了该请求：{detail}",
    "upstream_failed": "{upstream} 生成视频失败（{detail}）",
    "upstream_cancelled": "任务已在 {upstream} 被取消",
    "upstream_busy": "{upstream} 在任务截止前一直繁忙（{detail}）",
    "upstream_unavailable": "在任务截止前无法连接 {upstream}（{detail}）",
    "deadline_exceeded": "任务未在截止时间前完成（{upstream} 的最后状态：{detail}）",
    "upstream_result_missing": "{upstream} 报告成功但没有视频",
    "upstream_result_expired": "{upstream} 的视频链接在复制前已过期（{detail}）",
    "upstream_result_unavailable": "无法从 {upstream} 下载视频（{detail}）",
    "upstream_result_too_large": "{upstream} 返回的视频超过 {limit_mb} MB",
    "upstream_result_invalid": "{upstream} 返回的文件不是可播放的视频（{detail}）",
    "submit_interrupted": "向 {upstream} 的提交被中断，无法确认是否已被接受；未产生费用，请重新提交",
    "extend_source_provider": (
        "extend_from_task_id 由 {provider} 生成；在 {upstream} 扩展需要在该处生成的源视频"
    ),
    "callback_signature": "回调签名缺失或校验失败",
    "cancel_terminal": "任务 {task_id} 已是 {status} 状态，无法取消",
    "cursor_invalid": "cursor 不是本 API 返回的值",
    "param_invalid": "参数 {param} 无效：{detail}",
    "model_not_allowed": "此 API 密钥无权使用模型 {model}",
    "too_many_in_flight": "此 API 密钥已有 {limit} 个排队或处理中的任务，请等待其完成",
    "not_ready": "未就绪：{detail}",
    "rate_limited_rpm": "此 API 密钥限制为每分钟 {limit} 次请求，请在 {retry_after} 秒后重试",
    "admin_token_invalid": "管理令牌无效：请发送 Authorization: Bearer <VIDGATE_ADMIN_TOKEN>",
    "admin_field_unknown": "{param} 不是此请求的字段；可用字段：{fields}",
    "key_not_found": "未找到 API 密钥 {key_id}",
    "callback_url_refused": "{param} 被拒绝：{detail}；回调只能发往公网 http(s) 主机",
    "delivery_not_found": "任务 {task_id} 没有 webhook 投递 {delivery_id}",
}

_KO: dict[str, str] = {
    "invalid_request": "잘못된 요청 매개변수",
    "authentication": "잘못된 인증 자격 증명",
    "payment_required": "잔액이 부족합니다. 충전 후 다시 시도하세요",
    "permission": "접근이 거부되었습니다",
    "not_found": "찾을 수 없음",
    "task_not_found": "작업 {task_id}을(를) 찾을 수 없습니다",
    "rate_limited": "요청 한도를 초과했습니다. 잠시 후 다시 시도하세요",
    "server_error": "내부 서버 오류입니다. 잠시 후 다시 시도하세요",
    "bad_gateway": "게이트웨이 오류. 서버를 일시적으로 사용할 수 없습니다",
    "field_required": "{param}은(는) 필수입니다",
    "image_fetch_failed": "{param}을(를) 다운로드할 수 없습니다: {detail}",
    "render_failed": "렌더링 실패: {detail}",
    "cancelled": "사용자가 취소함",
    "callback_url_refused": (
        "{param}이(가) 거부되었습니다: {detail}; 콜백은 공개 http(s) 호스트로만 보낼 수 있습니다"
    ),
    "delivery_not_found": "작업 {task_id}에 웹훅 전송 {delivery_id}이(가) 없습니다",
}

_JA: dict[str, str] = {
    "invalid_request": "リクエストパラメータが無効です",
    "authentication": "認証情報が無効です",
    "payment_required": "残高が不足しています。チャージしてから再試行してください",
    "permission": "アクセスが拒否されました",
    "not_found": "見つかりません",
    "task_not_found": "タスク {task_id} が見つかりません",
    "rate_limited": "レート制限を超えました。しばらくしてから再試行してください",
    "server_error": "内部サーバーエラーです。しばらくしてから再試行してください",
    "bad_gateway": "ゲートウェイエラー。サーバーは一時的に利用できません",
    "field_required": "{param} は必須です",
    "image_fetch_failed": "{param} をダウンロードできません: {detail}",
    "render_failed": "レンダリングに失敗しました: {detail}",
    "cancelled": "ユーザーによりキャンセルされました",
    "callback_url_refused": (
        "{param} は拒否されました: {detail}。コールバックは公開 http(s) ホストにのみ送信できます"
    ),
    "delivery_not_found": "タスク {task_id} に Webhook 配信 {delivery_id} はありません",
}

_CATALOGS = {"en": _EN, "zh": _ZH, "ko": _KO, "ja": _JA}


def normalize_language(value: str | None) -> str:
    """Map `zh-CN`, `ZH`, `ja_JP` and friends to one of LANGUAGES; default English."""
    if not value:
        return "en"
    head = value.strip().lower().replace("_", "-").split("-")[0]
    return head if head in _CATALOGS else "en"


def message(message_key: str, language: str = "en", /, **params: Any) -> str:
    template = _CATALOGS.get(language, _EN).get(message_key) or _EN.get(message_key)
    if template is None:
        return message_key
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        # A template asked for a field the raiser did not pass: show it plainly, never crash.
        return template


def has_key(key: str) -> bool:
    return key in _EN
