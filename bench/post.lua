-- wrk script: POST the JSON body given in the BODY environment variable.
wrk.method = "POST"
wrk.body = os.getenv("BODY") or '{"params": {}}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("AUTHORIZATION")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
local cookie = os.getenv("COOKIE")
if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end
