"""Fixed texts that the calibrations run on: the backend choice (``calibration``) and the
int8 policy's activation spread (``export``)."""

# Sentences in several scripts, joined into texts of 1 to 8 sentences: short queries and
# passage-length texts, as encode and evaluation see them.
_SENTENCES = (
    "The cat is sleeping on the sofa near the window.",
    "Le train pour Lyon part à huit heures du matin.",
    "В библиотеке много старых книг о истории города.",
    "Hôm nay trời mưa rất to ở Hà Nội.",
    "هذا المطعم يقدم أفضل القهوة في المدينة.",
    "मैं हर सुबह पार्क में टहलने जाता हूँ।",
    "Kiinteistön hinta nousi viime vuonna selvästi.",
    "How do I reset the password of my account?",
    "서울의 지하철은 깨끗하고 편리합니다.",
    "Mtoto anasoma kitabu kipya shuleni.",
    "El museo abre todos los días excepto los lunes.",
    "Saya suka makan nasi goreng di malam hari.",
)
CALIBRATION_TEXTS = tuple(
    " ".join(_SENTENCES[(i + j) % len(_SENTENCES)] for j in range(1 + i % 8)) for i in range(48)
)
