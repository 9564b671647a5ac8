-- wrk script: POST real images as raw image/jpeg bodies, cycling through WRK_IMAGES
-- (paths separated by ':'), one prepared request per image.
local requests = {}
local i = 0

function init(args)
  for path in string.gmatch(os.getenv("WRK_IMAGES"), "[^:]+") do
    local f = io.open(path, "rb")
    local body = f:read("*all")
    f:close()
    requests[#requests + 1] = wrk.format("POST", "/predict",
      {["Content-Type"] = "image/jpeg"}, body)
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end

-- WRK_HONOUR_RETRY_AFTER=1: a client that waits the 1 s the server's 503 asks for
-- (Retry-After: 1) before its next request. wrk does not say which connection calls
-- delay(), so each 503 delays the next request sent: the right number of waits, on
-- whichever connection sends next.
if os.getenv("WRK_HONOUR_RETRY_AFTER") == "1" then
  local waits = 0

  function response(status, headers, body)
    if status == 503 then
      waits = waits + 1
    end
  end

  function delay()
    if waits > 0 then
      waits = waits - 1
      return 1000
    end
    return 0
  end
end
