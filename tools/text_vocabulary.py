"""Words the generator writes titles and queries with: each category's catalog word, English synonyms,
and Chinese words, so that finding an item's category from text takes understanding, not matching.

Index i of every table belongs to category word i of CATEGORY_WORDS (tools.generate).
"""

from __future__ import annotations

# (English synonyms, Chinese words: the usual one first, then a synonym)
CATEGORY_TEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "shoes": (("sneakers", "footwear"), ("鞋", "运动鞋")),
    "laptops": (("notebook computers", "ultrabooks"), ("笔记本电脑", "手提电脑")),
    "headphones": (("earphones", "headsets"), ("耳机", "头戴式耳机")),
    "watches": (("wristwatches", "timepieces"), ("手表", "腕表")),
    "backpacks": (("rucksacks", "daypacks"), ("背包", "双肩包")),
    "jackets": (("coats", "parkas"), ("夹克", "外套")),
    "phones": (("smartphones", "mobile phones"), ("手机", "智能手机")),
    "cameras": (("digital cameras", "camcorders"), ("相机", "数码相机")),
    "lamps": (("desk lights", "lighting"), ("台灯", "灯具")),
    "chairs": (("seats", "stools"), ("椅子", "座椅")),
    "mugs": (("coffee cups", "cups"), ("马克杯", "杯子")),
    "toys": (("playthings", "games for kids"), ("玩具", "儿童玩具")),
    "books": (("novels", "paperbacks"), ("书", "图书")),
    "bikes": (("bicycles", "cycles"), ("自行车", "单车")),
    "tents": (("camping shelters", "canopies"), ("帐篷", "露营帐篷")),
    "perfume": (("fragrance", "cologne"), ("香水", "香氛")),
    "jeans": (("denim pants", "denims"), ("牛仔裤", "丹宁裤")),
    "sofas": (("couches", "settees"), ("沙发", "布艺沙发")),
    "guitars": (("acoustic guitars", "electric guitars"), ("吉他", "电吉他")),
    "blenders": (("mixers", "juicers"), ("搅拌机", "榨汁机")),
    "kettles": (("electric kettles", "teakettles"), ("水壶", "电热水壶")),
    "monitors": (("displays", "screens"), ("显示器", "屏幕")),
    "keyboards": (("mechanical keyboards", "keypads"), ("键盘", "机械键盘")),
    "rugs": (("carpets", "mats"), ("地毯", "地垫")),
    "dresses": (("gowns", "frocks"), ("连衣裙", "裙子")),
    "helmets": (("bike helmets", "hard hats"), ("头盔", "安全帽")),
    "wallets": (("purses", "billfolds"), ("钱包", "皮夹")),
    "speakers": (("loudspeakers", "soundbars"), ("音箱", "扬声器")),
    "candles": (("scented candles", "tealights"), ("蜡烛", "香薰蜡烛")),
    "scarves": (("shawls", "neckerchiefs"), ("围巾", "披肩")),
}
# Chinese counterparts of tools.generate's QUERY_MODIFIERS and TITLE_ADJECTIVES, index for index.
QUERY_MODIFIERS_ZH = ("", "", "", "便宜", "最好的", "新款", "黑色", "小号", "大号", "高端", "特价")
TITLE_ADJECTIVES_ZH = ("经典", "都市", "专业", "环保", "紧凑", "豪华", "北欧", "复古", "智能", "超轻", "日常",
                       "户外", "工作室", "轻便", "优选", "大胆")
