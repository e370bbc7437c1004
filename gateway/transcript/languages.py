"""Language facts for `metadata.language_pack_info`, for every language Whisper knows.

The names are Whisper's own table (openai/whisper tokenizer.LANGUAGES); Speechmatics codes
that differ from Whisper's (`cmn` for Mandarin) are mapped both ways.
"""

from __future__ import annotations

import msgspec

WHISPER_LANGUAGES: dict[str, str] = {
    "en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ru": "Russian",
    "ko": "Korean", "fr": "French", "ja": "Japanese", "pt": "Portuguese", "tr": "Turkish",
    "pl": "Polish", "ca": "Catalan", "nl": "Dutch", "ar": "Arabic", "sv": "Swedish",
    "it": "Italian", "id": "Indonesian", "hi": "Hindi", "fi": "Finnish", "vi": "Vietnamese",
    "he": "Hebrew", "uk": "Ukrainian", "el": "Greek", "ms": "Malay", "cs": "Czech",
    "ro": "Romanian", "da": "Danish", "hu": "Hungarian", "ta": "Tamil", "no": "Norwegian",
    "th": "Thai", "ur": "Urdu", "hr": "Croatian", "bg": "Bulgarian", "lt": "Lithuanian",
    "la": "Latin", "mi": "Maori", "ml": "Malayalam", "cy": "Welsh", "sk": "Slovak",
    "te": "Telugu", "fa": "Persian", "lv": "Latvian", "bn": "Bengali", "sr": "Serbian",
    "az": "Azerbaijani", "sl": "Slovenian", "kn": "Kannada", "et": "Estonian",
    "mk": "Macedonian", "br": "Breton", "eu": "Basque", "is": "Icelandic", "hy": "Armenian",
    "ne": "Nepali", "mn": "Mongolian", "bs": "Bosnian", "kk": "Kazakh", "sq": "Albanian",
    "sw": "Swahili", "gl": "Galician", "mr": "Marathi", "pa": "Punjabi", "si": "Sinhala",
    "km": "Khmer", "sn": "Shona", "yo": "Yoruba", "so": "Somali", "af": "Afrikaans",
    "oc": "Occitan", "ka": "Georgian", "be": "Belarusian", "tg": "Tajik", "sd": "Sindhi",
    "gu": "Gujarati", "am": "Amharic", "yi": "Yiddish", "lo": "Lao", "uz": "Uzbek",
    "fo": "Faroese", "ht": "Haitian Creole", "ps": "Pashto", "tk": "Turkmen",
    "nn": "Nynorsk", "mt": "Maltese", "sa": "Sanskrit", "lb": "Luxembourgish",
    "my": "Myanmar", "bo": "Tibetan", "tl": "Tagalog", "mg": "Malagasy", "as": "Assamese",
    "tt": "Tatar", "haw": "Hawaiian", "ln": "Lingala", "ha": "Hausa", "ba": "Bashkir",
    "jw": "Javanese", "su": "Sundanese", "yue": "Cantonese",
}

# Speechmatics language code -> Whisper's, where they differ.
_TO_WHISPER = {"cmn": "zh", "jv": "jw"}
_FROM_WHISPER = {v: k for k, v in _TO_WHISPER.items()}

# Scripts written without spaces between words.
_NO_DELIMITER = {"zh", "ja", "yue", "th", "lo", "my", "km", "bo"}
_RIGHT_TO_LEFT = {"ar", "fa", "he", "ur", "yi", "ps", "sd"}


class LanguagePackInfo(msgspec.Struct):
    language_description: str
    word_delimiter: str
    writing_direction: str
    itn: bool = False
    adapted: bool = False


def to_whisper(code: str) -> str:
    """The Whisper code for a Speechmatics language code (`cmn` -> `zh`)."""
    return _TO_WHISPER.get(code, code)


def from_whisper(code: str) -> str:
    return _FROM_WHISPER.get(code, code)


def is_known(code: str) -> bool:
    return to_whisper(code) in WHISPER_LANGUAGES


def pack_info(code: str) -> LanguagePackInfo:
    whisper = to_whisper(code)
    return LanguagePackInfo(
        language_description=WHISPER_LANGUAGES.get(whisper, code),
        word_delimiter="" if whisper in _NO_DELIMITER else " ",
        writing_direction="right-to-left" if whisper in _RIGHT_TO_LEFT else "left-to-right",
    )
