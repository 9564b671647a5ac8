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
