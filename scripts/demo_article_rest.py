# The article's REST example, as users paste it: POST /generate on port 8080, PNG back.
import json

import requests

payload = {
    "prompt": "a futuristic city at sunset, cyberpunk style, flying cars, neon lights",
    "negative_prompt": "blurry, low resolution, distorted faces",
    "width": 1024,
    "height": 1024,
    "steps": 50,
    "guidance_scale": 7.5,
    "style_preset": "cyberpunk",
}

response = requests.post(
    "http://localhost:8080/generate",
    data=json.dumps(payload),
    headers={"Content-Type": "application/json"},
)

if response.status_code == 200:
    with open("output.png", "wb") as f:
        f.write(response.content)
    print("Image generated and saved.")
else:
    print(f"Error: {response.text}")
