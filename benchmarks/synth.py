"""Synthetic MercadoLibre-style product-title files: a fixture for scale tests and benchmarks.

A fixture of the tests and benchmarks, not of the package (it imports nothing from prodcat):
`python benchmarks/synth.py --rows 1000000 --output titles.csv` writes a file and prints its
summary as one line of JSON (a bar on stderr).

The real MercadoLibre Data Challenge 2019 ``train.csv`` has the header
``title,label_quality,language,category``: ~20 M short titles (≈ 8 words) written by
sellers in Spanish or Portuguese (50/50), 1,588 categories with a long-tailed size
distribution and a ``label_quality`` of ``reliable`` (≈ 6 %) or ``unreliable``.
:func:`write_synthetic_titles` writes files with the same shape, fast enough to make
20 M-row files for memory / throughput tests of the training pipeline.

Model of the data
-----------------
*Vocabulary* (built once per ``(seed, categories)`` and cached):

* **Categories** are named like the real ones (``ELECTRIC_PRESSURE_WASHERS``): ~190
  base products (English name, Spanish and Portuguese head noun phrase) crossed with
  optional modifiers (``ELECTRIC``, ``PORTABLE``, ``KIDS`` ...).  The plain base
  products come first, then modifier combinations; past the ~2,800 combinations names
  get a numeric suffix.
* Every base product has **core words** (30–160): 25–50 % real product words shared
  between products (``motor``, ``ruedas``/``rodas``, ``acero``/``aço`` ...), the rest
  pseudo-words built from Spanish syllables, each with a Portuguese spelling
  (``-ción`` → ``-ção``, ``ñ`` → ``nh``, ``ll`` → ``lh``, ``-ble`` → ``-vel`` ...).
  A modifier category keeps ~70 % of its base product's core words and adds 10–40 of
  its own (at most 200), so related categories are confusable, as in the real data.
  Core words are picked with a skewed (Zipf-like) distribution.
* **Brands**: every base product has 3–10 real brands (Samsung, Bosch, Tramontina ...)
  and 3–12 pseudo-brands of its own.
* **Shared words**: language-specific connectors (``de``, ``para``, ``con``/``com``,
  ``c/``, ``x``), generic words (``nuevo``/``novo``, ``original``, ``envío gratis``/
  ``frete grátis``, ``kit``, colours ...), title prefixes (``Kit``, ``Par De``,
  ``Juego De``/``Jogo De``) and numbers with units (``120``, ``1700w``, ``12 Kilos``,
  ``7,20 Metros``, ``30x40``, years).  The row's language picks the Spanish or the
  Portuguese variant of every word.

*Rows* (vectorised with numpy, chunk by chunk; pyarrow assembles the strings):

* category: Zipf-like sizes, weight ∝ 1 / (rank + C/40), except that every 25th row
  goes to the next category of a fixed round-robin order, so every category has at
  least 4 rows once ``rows >= 100 * categories``.  For 1,588 categories the largest
  category holds ~0.7 % of the rows, ~20× the median one.
* language: 50/50 ``spanish``/``portuguese``; label_quality: 6 % ``reliable``.
* a title is 3–13 slots, ≈ 8 words, never more than 15: a head noun phrase (or a
  prefix, number, brand or core word followed by it), then core words, connectors,
  generic words, brands, numbers and *novel tokens*, joined by spaces and now and then
  ``" - "``, ``" / "``, ``" + "``, ``", "`` or a double space (≈ 6 % of the titles
  have a comma, 6 % a ``" - "``, 11 % a ``/``).  Accented words lose their accents in
  45 % of uses.  Rows are Title Case (93 %), Sentence case (4 %), lower case (2 %) or
  UPPER CASE (1 %).

*Vocabulary growth* (Heaps' law).  10 % of the slots after the head are novel tokens:
model codes (50 %: ``Bd5298``, ``Umc22``), new pseudo-brands (22 %) and typos of the
category's core words (28 %: a letter deleted, doubled, swapped or replaced).  Each
category ``c`` has its own stream of novel ids: when its ``t``-th novel slot is drawn,
``D(t) = min(t, floor(K * t**BETA))`` ids exist; if ``D(t) > D(t-1)`` the slot gets
the brand-new id ``D(t-1)``, otherwise it reuses the existing id
``floor(D(t-1) * u**2)`` (``u`` uniform, so old ids are more popular).  The text of
an id is a hash of ``(seed, c, id)``: new tokens keep appearing all through the file,
reproducibly and independently of the chunking.  With ``K = 2.9`` and ``BETA = 0.75``
the novel ids grow like ``n**0.75`` (distinct texts a little slower: short brands and
typos collide); with the static vocabulary (~76 k lower-cased tokens for 1,588
categories) this gives, for distinct lower-cased tokens of the titles split on
``\\W+``: ≈ 3.5 k for 1 k rows, 19 k for 10 k, 85 k for 100 k, 0.32 M for 1 M,
0.74 M for 4 M and ≈ 2 M for 20 M rows, i.e. a Heaps exponent β ≈ 0.6 between 1 M
and 20 M rows.  (The 51 k-row Spanish sample of the real data has 17 k distinct
tokens at 10 k rows and 43 k at 50 k rows, β ≈ 0.57.)

*Reproducibility*: the randomness of row block ``b`` (4,096 rows) comes from
``SeedSequence([seed, b])``, so the same ``(seed, rows, categories)`` gives a
byte-identical file whatever ``chunk_rows`` is.  Gzip output (level 1, for speed) is
written with ``mtime=0`` and no file name, so ``.gz`` files are byte-identical too.
"""

from __future__ import annotations

import gzip
import itertools
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["COLUMNS", "write_synthetic_titles"]

COLUMNS = ("title", "label_quality", "language", "category")
LANGUAGES = ("spanish", "portuguese")
LABEL_QUALITIES = ("unreliable", "reliable")

BLOCK_ROWS = 4096  # rows drawn from one random stream; chunks are multiples of this
MAX_CHUNK_ROWS = 256 * BLOCK_ROWS  # ~1 M rows: bounded memory, int32 string offsets
GEN_ROWS = 16 * BLOCK_ROWS  # rows generated at once; chunks are concatenations of these
RELIABLE_SHARE = 0.06
MAX_WORDS = 15
HEAPS_K = 2.9  # novel ids of a category after t novel slots: min(t, K * t**BETA)
HEAPS_BETA = 0.75
ACCENT_DROP = 0.45  # share of uses of an accented word written without its accents
ROUND_ROBIN_EVERY = 25  # every 25th row goes to the next category in turn
GZIP_LEVEL = 1

# Slot types.
_HEAD, _CORE, _CONN, _GEN, _BRAND, _NUM, _NOVEL, _PREFIX = range(8)
_TABLE_TYPES = (_CONN, _GEN, _PREFIX, _NUM)  # drawn from language-specific tables
# fmt: off
# (type, probability) for the first slot and for the others.
_FIRST_SLOT = ((_HEAD, 0.74), (_PREFIX, 0.10), (_NUM, 0.05), (_BRAND, 0.04), (_CORE, 0.07))
_OTHER_SLOT = ((_CORE, 0.40), (_CONN, 0.12), (_GEN, 0.14), (_BRAND, 0.09), (_NUM, 0.15),
               (_NOVEL, 0.10))
# Probabilities of 3, 4, ..., 13 slots per title.
_SLOT_PMF = (0.08, 0.13, 0.17, 0.19, 0.16, 0.12, 0.08, 0.04, 0.02, 0.007, 0.003)
_MIN_SLOTS = 3
# (separator, words it adds, probability) between slots, and after the last slot.
_SEPARATORS = ((" ", 0, 0.946), ("  ", 0, 0.015), (" - ", 1, 0.012), (", ", 0, 0.009),
               (" / ", 1, 0.012), (" + ", 1, 0.006))
_END_SEPARATORS = (("", 0, 0.97), (" ", 0, 0.03))
# Row case styles: Title Case, Sentence case, lower, UPPER; and the pool variant
# (0 lower, 1 title, 2 upper) of their words (a Sentence case row titles its first slot).
_CASE_PMF = (0.93, 0.04, 0.02, 0.01)
_CASE_VARIANT = (1, 0, 0, 2)
# fmt: on

# --------------------------------------------------------------------------------------
# Word lists.  Pairs are "spanish:portuguese"; a single word is the same in both.

# English category name : Spanish head phrase : Portuguese head phrase.
_BASES = """
PRESSURE_WASHERS:hidrolavadora:lavadora de alta pressão|SOUND_CARDS:placa de sonido:placa de som
WASHING_MACHINES:lavarropas:máquina de lavar|BRAKE_DISCS:disco de freno:disco de freio
FALSE_EYELASHES:pestañas postizas:cílios postiços|SPRINKLERS:aspersor:aspersor
RACQUETS:raqueta:raquete|TRIPODS:trípode:tripé|AIR_FILTERS:filtro de aire:filtro de ar
LUNCHBOXES:lunchera:lancheira|AC_CONDENSERS:condensador:condensador
BILL_COUNTERS:contador de billetes:contador de cédulas|ESSENTIAL_OILS:aceite esencial:óleo essencial
WATER_PUMPS:bomba de agua:bomba d'água|ROUTERS:router:roteador|CAPS:gorra:boné
AIR_COMPRESSORS:compresor:compressor|TRAIN_CASES:valija organizadora:maleta organizadora
CHARGERS:cargador:carregador|SHELVES:estantería:estante|AIRBRUSHES:aerógrafo:aerógrafo
PUZZLES:rompecabezas:quebra-cabeça|NOTEBOOKS:notebook:notebook|PLAYARDS:corralito:cercadinho
CHAIRS:silla:cadeira|TABLES:mesa:mesa|BEDS:cama:cama|LAMPS:lámpara:luminária
SNEAKERS:zapatillas:tênis|T_SHIRTS:remera:camiseta|JACKETS:campera:jaqueta
WRISTWATCHES:reloj pulsera:relógio de pulso|HEADPHONES:auriculares:fone de ouvido
SPEAKERS:parlante:caixa de som|CELLPHONES:celular:celular|CELLPHONE_CASES:funda:capinha
TABLETS:tablet:tablet|MONITORS:monitor:monitor|KEYBOARDS:teclado:teclado|MICE:mouse:mouse
PRINTERS:impresora:impressora|CAMERAS:cámara:câmera|DRONES:drone:drone
TELEVISIONS:televisor:televisão|REFRIGERATORS:heladera:geladeira|MICROWAVES:microondas:micro-ondas
BLENDERS:licuadora:liquidificador|COFFEE_MAKERS:cafetera:cafeteira|FANS:ventilador:ventilador
AIR_CONDITIONERS:aire acondicionado:ar condicionado|HEATERS:estufa:aquecedor
DRILLS:taladro:furadeira|SAWS:sierra:serra|SCREWDRIVERS:destornillador:chave de fenda
WRENCHES:llave:chave|HAMMERS:martillo:martelo|TIRES:neumático:pneu|RIMS:llanta:roda
BATTERIES:batería:bateria|HEADLIGHTS:faro:farol|MIRRORS:espejo:espelho
SEAT_COVERS:funda de asiento:capa de banco|HELMETS:casco:capacete|GLOVES:guantes:luvas
BACKPACKS:mochila:mochila|HANDBAGS:cartera:bolsa|WALLETS:billetera:carteira
SUNGLASSES:anteojos de sol:óculos de sol|PERFUMES:perfume:perfume|SHAMPOOS:shampoo:xampu
HAIR_DRYERS:secador de pelo:secador de cabelo|HAIR_STRAIGHTENERS:planchita:chapinha
MAKEUP_BRUSHES:brochas de maquillaje:pincéis de maquiagem|LIPSTICKS:labial:batom
DOLLS:muñeca:boneca|TOY_CARS:autito:carrinho|BICYCLES:bicicleta:bicicleta
SKATEBOARDS:patineta:skate|BALLS:pelota:bola|TENTS:carpa:barraca|FISHING_REELS:reel:molinete
FISHING_RODS:caña de pescar:vara de pesca|KNIVES:cuchillo:faca|COOKING_POTS:olla:panela
FRYING_PANS:sartén:frigideira|DRINKING_GLASSES:vaso:copo|MUGS:taza:caneca|TOWELS:toalla:toalha
BED_SHEETS:sábanas:lençol|PILLOWS:almohada:travesseiro|CURTAINS:cortina:cortina
CARPETS:alfombra:tapete|SOFAS:sillón:sofá|DESKS:escritorio:escrivaninha
WARDROBES:placard:guarda-roupa|FAUCETS:grifería:torneira|SHOWERS:ducha:chuveiro
TOILETS:inodoro:vaso sanitário|DOORS:puerta:porta|DOOR_LOCKS:cerradura:fechadura
PAINTS:pintura:tinta|CABLES:cable:cabo|GUITARS:guitarra:guitarra|PIANOS:piano:piano
DRUMS:batería musical:bateria musical|MICROPHONES:micrófono:microfone
AMPLIFIERS:amplificador:amplificador|VIDEO_GAMES:juego:jogo|GAME_CONSOLES:consola:console
GAMEPADS:joystick:controle|BOOKS:libro:livro|PENS:lapicera:caneta|STICKERS:sticker:adesivo
PET_FOODS:alimento balanceado:ração|PET_COLLARS:collar para perro:coleira
AQUARIUMS:pecera:aquário|SUPPLEMENTS:suplemento:suplemento|PROTEINS:proteína:proteína
DUMBBELLS:mancuerna:halter|TREADMILLS:cinta de correr:esteira|ELLIPTICAL_MACHINES:elíptico:elíptico
SUITCASES:valija:mala|UMBRELLAS:paraguas:guarda-chuva|STROLLERS:cochecito:carrinho de bebê
DIAPERS:pañales:fraldas|BABY_BOTTLES:mamadera:mamadeira
SECURITY_CAMERAS:cámara de seguridad:câmera de segurança|ALARMS:alarma:alarme
SOLAR_PANELS:panel solar:painel solar|GENERATORS:generador:gerador
WELDING_MACHINES:soldadora:máquina de solda|GRILLS:parrilla:churrasqueira
POOLS:pileta:piscina|HAMMOCKS:hamaca:rede de descanso|SEEDS:semillas:sementes
LAWN_MOWERS:cortadora de césped:cortador de grama|CHAINSAWS:motosierra:motosserra
LADDERS:escalera:escada|MATTRESSES:colchón:colchão|SHORTS:short:bermuda|JEANS:jean:calça jeans
DRESSES:vestido:vestido|BRAS:corpiño:sutiã|SOCKS:medias:meias|BOOTS:botas:botas
SANDALS:sandalias:sandálias|RINGS:anillo:anel|EARRINGS:aros:brincos|NECKLACES:collar:colar
BRACELETS:pulsera:pulseira|MEMORY_CARDS:tarjeta de memoria:cartão de memória
USB_FLASH_DRIVES:pendrive:pendrive|HARD_DRIVES:disco rígido:hd externo
RAM_MEMORY_MODULES:memoria ram:memória ram|GRAPHICS_CARDS:placa de video:placa de vídeo
MOTHERBOARDS:placa madre:placa mãe|PROCESSORS:procesador:processador
POWER_SUPPLIES:fuente:fonte|MODEMS:modem:modem|PROJECTORS:proyector:projetor
REMOTE_CONTROLS:control remoto:controle remoto|SPARK_PLUGS:bujía:vela de ignição
SHOCK_ABSORBERS:amortiguador:amortecedor|CLUTCH_KITS:kit de embrague:kit de embreagem
RADIATORS:radiador:radiador|OIL_FILTERS:filtro de aceite:filtro de óleo
WIPER_BLADES:escobilla:palheta|STEERING_WHEELS:volante:volante|EXHAUSTS:escape:escapamento
SCALES:balanza:balança|THERMOMETERS:termómetro:termômetro
BLOOD_PRESSURE_MONITORS:tensiómetro:medidor de pressão|WHEELCHAIRS:silla de ruedas:cadeira de rodas
MASSAGERS:masajeador:massageador|COSTUMES:disfraz:fantasia|BALLOONS:globos:balões
CANDLES:velas:velas|PICTURE_FRAMES:portarretrato:porta-retrato
WALL_CLOCKS:reloj de pared:relógio de parede
VASES:florero:vaso de flores|SEWING_MACHINES:máquina de coser:máquina de costura
FABRICS:tela:tecido|KNITTING_YARNS:lana:lã|BRAKE_PADS:pastillas de freno:pastilha de freio
BALL_JOINTS:rótula:pivô|STATUES:estatua:estátua|PLACEMATS:individual:jogo americano
ALARM_CLOCKS:despertador:despertador|HEADLAMPS:linterna de cabeza:lanterna de cabeça
CHRISTMAS_TREES:árbol de navidad:árvore de natal|SIDE_TABLES:mesa auxiliar:mesa lateral
BOUNCE_HOUSES:castillo inflable:pula-pula|TOBACCO_PIPES:pipa:cachimbo|COOKTOPS:anafe:cooktop
OVENS:horno:forno|KITCHEN_SINKS:bacha:cuba|DISHWASHERS:lavavajillas:lava-louças
VACUUM_CLEANERS:aspiradora:aspirador de pó|IRONS:plancha:ferro de passar
TOASTERS:tostadora:torradeira|MIXERS:batidora:batedeira
FOOD_PROCESSORS:procesadora:processador de alimentos
WATER_FILTERS:filtro de agua:filtro de água|THERMOS:termo:garrafa térmica|MATE_GOURDS:mate:cuia
WINE_CELLARS:cava de vino:adega|WINES:vino:vinho|BEERS:cerveza:cerveja
COFFEE_BEANS:café en grano:café em grão|TEAS:té:chá|SPICES:especias:temperos
"""

_MODIFIERS = """
ELECTRIC:eléctrico:elétrico|PORTABLE:portátil:portátil|KIDS:infantil:infantil
PROFESSIONAL:profesional:profissional|CAR:para auto:automotivo|MOTORCYCLE:para moto:para moto
GAMING:gamer:gamer|WIRELESS:inalámbrico:sem fio|OUTDOOR:exterior:externo|DIGITAL:digital:digital
VINTAGE:vintage:vintage|INDUSTRIAL:industrial:industrial|MINI:mini:mini|SMART:inteligente:inteligente
"""

_FEATURES = """
motor|bomba|filtro|cable:cabo|pantalla:tela|soporte:suporte|caja:caixa|bolsa|manguera:mangueira
disco|freno:freio|repuesto:reposição|pieza:peça|base|hoja:folha|cuchilla:lâmina|batería:bateria
control:controle|sensor|luz|panel:painel|placa|tornillo:parafuso|tuerca:porca|resorte:mola
bisagra:dobradiça|manija:alça|correa:correia|cadena:corrente|tubo|válvula|llave:chave|botón:botão
interruptor|enchufe:tomada|adaptador|conector|antena|lente|vidrio:vidro|marco:moldura|tapa:tampa
estuche:estojo|cierre:zíper|bolsillo:bolso|cuello:gola|suela:sola|cordón:cadarço|algodón:algodão
lycra|seda|cuero:couro|gamuza:camurça|goma:borracha|silicona:silicone|acrílico|mdf|pino:pinus
roble:carvalho|cromado|inox|hierro:ferro|bronce:bronze|cobre|oro:ouro|plata:prata|cristal
madera:madeira|acero:aço|aluminio:alumínio|plástico|reforzado:reforçado|ajustable:ajustável
plegable:dobrável|lavable:lavável|impermeable:impermeável|resistente|liviano:leve|pesado
compacto|silencioso|potente|rápido|suave|térmico|antideslizante:antiderrapante|magnético
transparente|estampado|liso|bordado|decorativo|moderno|clásico:clássico|retro|rústico
unisex:unissex|dama:feminino|caballero:masculino|trasero:traseiro|delantero:dianteiro
izquierdo:esquerdo|derecho:direito|superior|inferior|interno|externo|triple:triplo
simple:simples|ruedas:rodas|rueda:roda|puerta:porta|mesa|silla:cadeira|agua:água|aire:ar
aceite:óleo|gas:gás|vapor|calor|frío:frio|eléctrico:elétrico|manual|automático|inverter
táctil:touch|recargable:recarregável|inalámbrico:sem fio|bluetooth|wifi|usb|hdmi|led|lcd
turbo|nano|extra|medio:médio|largo:comprido|corto:curto|alto|bajo:baixo|ancho:largo
redondo|cuadrado:quadrado|rectangular:retangular|bebé:bebê|niños:crianças|hogar:casa
jardín:jardim|cocina:cozinha|baño:banheiro|oficina:escritório|camping|viaje:viagem
"""

_GENERIC = """
original|nuevo:novo|nueva:nova|oferta:promoção|envío gratis:frete grátis|kit|pack|combo
negro:preto|blanco:branco|calidad:qualidade|premium|importado|garantía:garantia|set:conjunto
juego:jogo|unidades|hombre:masculino|mujer:feminina|azul|rojo:vermelho|gris:cinza|rosa
verde|super|pro|plus|max|mini|full|hd|profesional:profissional|portátil|digital
excelente|nuevos:novos|envío:envio|gratis:grátis|cuotas:parcelas|sin interés:sem juros
promo:promoção|liquidación:liquidação|usado|modelo|tipo|color:cor|colores:cores|talle:tamanho
amarillo:amarelo|violeta:roxo|naranja:laranja|marrón:marrom|plateado:prateado|dorado:dourado
beige:bege|celeste:azul claro|universal|completo|accesorio:acessório|repuesto:peça
alta potencia:alta potência|calidad premium:qualidade premium|entrega inmediata:pronta entrega
mayorista:atacado|por mayor:atacado|local:loja|stock:estoque|caba:sp|nf|factura:nota fiscal
regalo:brinde|ahora:agora|ya:já|únicos:únicos|imperdible:imperdível|barato|importada|nueva!:nova!
"""

_CONNECTORS = """
de|para|con:com|y:e|x|c/|p/|en:em|del:do|la:a|el:o|sin:sem|a|al:ao|s/|por|o:ou|p/ auto:p/ carro
"""

_PREFIXES = """
kit|combo|par de|juego de:jogo de|set de:conjunto de|pack|x2|2|4|oferta:promoção|nuevo:novo
mini|super|repuesto:refil|lote de|caja de:caixa de
"""

_BRANDS = """
samsung philips sony lg motorola xiaomi apple bosch makita dewalt stanley tramontina electrolux
brastemp mondial britânia arno oster atma peabody liliana whirlpool nike adidas puma fila topper
olympikus mizuno reebok ford fiat chevrolet vw renault peugeot toyota honda yamaha suzuki citroen
nissan hp dell lenovo asus acer intel amd nvidia kingston sandisk seagate logitech genius
multilaser positivo nikon canon gopro jbl pioneer panasonic philco noblex bgh tcl hisense aoc
tp-link huawei nokia alcatel karcher lavor behringer fremax mattel lego hasbro disney marvel
barbie fisher-price chicco graco pampers huggies natura avon loreal maybelline nivea dove
gillette braun remington gama wahl tupperware bic faber-castell havaianas crocs vans converse
ray-ban oakley casio tommy lacoste levis swarovski pandora vonder tekbond 3m wd-40 castrol
mobil shell bridgestone pirelli michelin goodyear fate moura heliar osram cree sylvania ge
taramps stetsom gradiente intelbras hikvision dahua garmin fitbit amazfit bose beats
sennheiser shure roland fender gibson ibanez giannini tagima shimano caloi trek specialized
everlast speedo coleman nautika ntk quechua wilson babolat head penn spalding penalty umbro
kappa cofap monroe valeo mahle fram tecfil nakata skf ngk denso gamo brother singer jp
"""

# fmt: off
_SYLLABLES = (
    "ca co cu ta te ti to ma me mi mo pa pe pi po ra re ri ro la le li lo lu sa se si so "
    "na ne ni no da de di do ba be bo bu ga go fa fe fi fo va ve vi ja jo ci ce "
    "bra bre tra tre tro pre pro pla cla cle gra gre tri fra fle cri dro "
    "car cor tor man mon sal ver len lla llo ña que gui cha chi tas mar"
).split()
_ENDINGS = (
    "dor dora ción ero era ble illa ito ado ada ante al ura ista or ón ina azo dad ente "
    "eta ismo ivo iva"
).split()
_BRAND_SYLLABLES = (
    "lav or max ton ex vol tek fre mon dom bel rin ker zon tri sta cor ran vex tal kor lux "
    "mar tix gal pro fle nor sen vit dax ryo quan ber zet ola ami ka ko ri ta na vo la mi"
).split()
_BRAND_ENDINGS = "x tech max on ex ia ar is plus ol ium".split()
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_UNITS_ATTACHED = ("w:6 v:5 mm:5 cm:5 m:3 kg:4 g:2 ml:3 l:2 gb:4 tb:1 mah:2 hp:2 cc:1 mp:1 "
                   "k:1 hz:1 btu:1 mts:2 lts:2 a:1 x:2")
_UNIT_WORDS = (
    "kilos:3 litros:3 metros:3 bar:1 volts:1 watts:1 pulgadas:2 unidades:3 piezas:2 cm:4 "
    "mm:3 kg:3 lts:2 mts:2 gb:2 hp:1 pares:1 cuotas:1",
    "quilos:3 litros:3 metros:3 bar:1 volts:1 watts:1 polegadas:2 unidades:3 peças:2 cm:4 "
    "mm:3 kg:3 lts:2 mts:2 gb:2 hp:1 pares:1 vezes:1",
)
_ROUND_NUMBERS = (
    "110 120 127 150 180 200 220 250 300 350 400 450 500 600 700 750 800 900 1000 1200 "
    "1500 1700 1800 2000 2400 2500 3000 3500 4000 5000 6000 9000 10000 12000 13000 20000"
).split()
_DECIMALS = ("0.3 0.5 1.5 1.6 1.8 2.0 2.5 3.5 5.5 1,20 2,5 7,20 1,5 0,5 3,5 1.0 1.4 2.2 4,5 "
             "12,5").split()
_FRACTIONS = "1/2 3/4 1/4 2x1 3x1 08/ 8v 16v".split()
# fmt: on

_ACCENT_FOLD = str.maketrans("áéíóúâêôãõçñüà", "aeiouaeoaocnua")
_ACCENTED = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú"}
_TOKEN_SPLIT = re.compile(r"\W+")
_PT_UE = re.compile(r"(?<![qg])ue")
_PT_IE = re.compile(r"(?<![qg])ie")
_PT_SUFFIXES = (("dad", "dade"), ("ble", "vel"), ("ero", "eiro"), ("era", "eira"),
                ("ón", "ão"), ("azo", "aço"), ("z", "s"))  # fmt: skip

_LUT_BITS = 16  # resolution of the small inverse-CDF lookup tables
_TABLE_BITS = 18  # ... of the word tables
_CAT_BITS = 20  # ... of the category table


def _pairs(text: str) -> list[tuple[str, str]]:
    """Parse ``es:pt|word|...`` lists into (spanish, portuguese) pairs."""
    out = []
    for item in text.replace("\n", "|").split("|"):
        item = item.strip()
        if item:
            es, _, pt = item.partition(":")
            out.append((es.strip(), (pt or es).strip()))
    return out


def _triples(text: str) -> list[tuple[str, str, str]]:
    """Parse ``EN_NAME:spanish:portuguese|...`` lists."""
    out = []
    for item in text.replace("\n", "|").split("|"):
        if item.strip():
            en, es, pt = (part.strip() for part in item.split(":"))
            out.append((en, es, pt))
    return out


def _weighted(text: str) -> list[tuple[str, float]]:
    """Parse ``word:weight word:weight ...``."""
    return [(w, float(x)) for w, _, x in (item.rpartition(":") for item in text.split())]


def _to_portuguese(words: list[str]) -> list[str]:
    """Portuguese-looking spellings of Spanish(-like) words (one-word entries)."""
    text = "\n".join(words).replace("ción", "ção").replace("ñ", "nh").replace("ll", "lh")
    text = _PT_IE.sub("e", _PT_UE.sub("o", text))
    for es, pt in _PT_SUFFIXES:  # the suffixes never end one another
        text = re.sub(es + "$", pt, text, flags=re.MULTILINE)
    return text.split("\n")


def _agree(modifier: str, head: str) -> str:
    """Crude gender / number agreement of a modifier with the head noun phrase."""
    first = head.split(" ")[0]
    if modifier.endswith("o") and " " not in modifier:
        if first.endswith("as"):
            return modifier[:-1] + "as"
        if first.endswith(("os", "es")):
            return modifier + "s"
        if first.endswith(("a", "ção", "ión")):
            return modifier[:-1] + "a"
    return modifier


def _title_case(text: str) -> str:
    """Capitalise every space-separated word of a lower-case text (``1700w`` stays)."""
    return " ".join(map(str.capitalize, text.split(" ")))


def _weights_cdf(weights: object) -> np.ndarray:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cdf / cdf[-1]


def _lut(weights: object, bits: int = _LUT_BITS) -> np.ndarray:
    """Inverse-CDF lookup table: ``lut[random_bits]`` is a weighted random index."""
    cdf = _weights_cdf(weights)
    x = (np.arange(2**bits, dtype=np.float64) + 0.5) / 2**bits
    return np.minimum(np.searchsorted(cdf, x, side="right"), cdf.size - 1)


def _zipf_weights(n: int, a: float, shift: float) -> np.ndarray:
    return 1.0 / (np.arange(n) + shift) ** a


def _pseudo_words(
    rng: np.random.Generator,
    n: int,
    syllables: list[str],
    endings: list[str],
    ending_p: float,
    accent_p: float,
) -> list[str]:
    """``n`` pseudo-words of 2–3 syllables, some with an ending and an accent."""
    k = rng.integers(2, 4, n)
    picks = rng.integers(0, len(syllables), (n, 3)).tolist()
    has_end = (rng.random(n) < ending_p).tolist()
    end = rng.integers(0, len(endings), n).tolist()
    accent = (rng.random(n) < accent_p).tolist()
    out = []
    for i, ki in enumerate(k.tolist()):
        w = "".join([syllables[j] for j in picks[i][:ki]])
        if has_end[i]:
            w += endings[end[i]]
        if accent[i] and w.isascii():
            vowels = [p for p, ch in enumerate(w) if ch in _ACCENTED]
            if len(vowels) >= 2:
                p = vowels[-2]
                w = w[:p] + _ACCENTED[w[p]] + w[p + 1 :]
        out.append(w)
    return out


class _WordSource:
    """Pseudo-words generated in batches (a Python call per word list is slow)."""

    def __init__(
        self, rng: np.random.Generator, syllables: list[str], endings: list[str],
        ending_p: float, accent_p: float, portuguese: bool,
    ) -> None:  # fmt: skip
        self.args = (rng, 4096, syllables, endings, ending_p, accent_p)
        self.portuguese = portuguese
        self.words: list[tuple[str, str]] = []
        self.pos = 0

    def take(self, k: int) -> list[tuple[str, str]]:
        """The next ``k`` (spanish, portuguese) pairs."""
        while self.pos + k > len(self.words):
            new = _pseudo_words(*self.args)
            pt = _to_portuguese(new) if self.portuguese else new
            self.words = self.words[self.pos :] + list(zip(new, pt, strict=True))
            self.pos = 0
        self.pos += k
        return self.words[self.pos - k : self.pos]


def _numbers(lang: int) -> tuple[list[str], np.ndarray]:
    """Number phrases (``120``, ``1700w``, ``12 Kilos``, ``7,20 Metros``) and weights."""
    nums: list[tuple[str, float]] = [(str(i), 8.0 / i**0.5) for i in range(1, 13)]
    nums += [(str(i), 2.0 / i**0.7 * (4 if i % 10 == 0 else 1)) for i in range(13, 101)]
    nums += [(x, 0.6) for x in _ROUND_NUMBERS]
    nums += [(str(y), 0.03 * (4 if y >= 2000 else 1)) for y in range(1968, 2020)]
    nums += [(x, 0.25) for x in _DECIMALS]
    attached = _weighted(_UNITS_ATTACHED)
    separate = _weighted(_UNIT_WORDS[lang])
    out: list[tuple[str, float]] = []
    for n, w in nums:
        out.append((n, w))
        out += [(n + u, w * uw * 0.02) for u, uw in attached]
        out += [(n + " " + u, w * uw * 0.012) for u, uw in separate]
    sides = (10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200)
    out += [(f"{a}x{b}", 0.02) for a in sides for b in sides[2:]]
    out += [(x, 0.1) for x in _FRACTIONS]
    return [t for t, _ in out], np.array([w for _, w in out])


class _PoolBuilder:
    """Interns lower-case strings."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.items: list[str] = []

    def add(self, text: str) -> int:
        found = self.ids.get(text)
        if found is None:
            found = self.ids[text] = len(self.items)
            self.items.append(text)
        return found

    def add_folded(self, text: str) -> int:
        """Add a word and its accent-free variant; return the word's id."""
        found = self.add(text)
        if not text.isascii():
            self.add(text.translate(_ACCENT_FOLD))
        return found


@dataclass(frozen=True)
class _Vocab:
    """Static vocabulary and sampling tables (see the module docstring)."""

    n_static: int
    strings: pa.StringArray  # 6 variants of every entry: (lower|title|upper) x (""|" ")
    lower_pool: np.ndarray  # uint8 bytes of the lower-case entries
    off: np.ndarray  # start of each entry in lower_pool
    length: np.ndarray  # byte length of each entry
    words: np.ndarray  # int8 whitespace-separated words of each entry
    folded: np.ndarray  # id of the accent-free variant (the entry itself when ASCII)
    atom_ptr: np.ndarray  # CSR: lower-cased \W+ tokens of each entry
    atom_ids: np.ndarray
    atoms: list[str]  # text of the tokens
    one_word_id: int  # placeholder id for novel slots
    space_id: int
    empty_id: int
    sep_ids: np.ndarray  # entries of _SEPARATORS
    sep_words: np.ndarray
    sep_lut: np.ndarray
    end_sep_ids: np.ndarray
    end_sep_lut: np.ndarray
    slot_lut: np.ndarray  # -> number of slots of a title
    case_lut: np.ndarray  # -> case style of a row
    type_lut: np.ndarray  # (2, 2**16): first slot / other slots -> slot type
    type_table: np.ndarray  # slot type -> row of table_lut / 2, or -1
    table_lut: np.ndarray  # (len(_TABLE_TYPES) * 2 languages) x 2**18 -> entry id
    pow_lut: np.ndarray  # u -> u**1.6, for skewed picks from core word / brand lists
    # Categories.
    names: pa.StringArray
    cat_lut: np.ndarray  # 2**20 -> category (Zipf-like)
    round_robin: np.ndarray
    head_ids: np.ndarray  # [lang * C + c]
    core_ptr: np.ndarray
    core_len: np.ndarray
    core_ids: np.ndarray  # [lang * n_core + core_ptr[c] + k]
    core_ascii: np.ndarray  # accent-free spanish variant, for typos
    brand_ptr: np.ndarray
    brand_len: np.ndarray
    brand_ids: np.ndarray
    # Pieces of novel tokens.
    letter_ids: np.ndarray
    digit_ids: np.ndarray
    syllable_ids: np.ndarray
    brand_ending_ids: np.ndarray


def _category_lists(
    rng: np.random.Generator, categories: int
) -> tuple[list[str], list[tuple[str, str]], list[list[tuple[str, str]]], list[list[str]]]:
    """Names, head phrases, core word lists and brand lists of the categories."""
    bases = _triples(_BASES)
    mods = _triples(_MODIFIERS)
    combos = [(int(b), -1) for b in rng.permutation(len(bases))]
    extra = [(b, m) for b in range(len(bases)) for m in range(len(mods))]
    combos += [extra[i] for i in rng.permutation(len(extra))]
    combos = [combos[i % len(combos)] for i in range(categories)]

    features = _pairs(_FEATURES)
    feature_p = _zipf_weights(len(features), 0.6, 5.0)
    feature_p /= feature_p.sum()
    real_brands = list(dict.fromkeys(_BRANDS.split()))
    brand_p = _zipf_weights(len(real_brands), 0.8, 3.0)
    brand_p /= brand_p.sum()

    core_words = _WordSource(rng, _SYLLABLES, _ENDINGS, 0.45, 0.06, portuguese=True)
    brand_words = _WordSource(rng, _BRAND_SYLLABLES, _BRAND_ENDINGS, 0.3, 0.0, portuguese=False)
    base_core: dict[int, list[tuple[str, str]]] = {}
    base_brands: dict[int, list[str]] = {}
    for b in sorted({b for b, _ in combos}):
        n_core = int(np.clip(round(np.exp(rng.normal(np.log(75), 0.45))), 30, 160))
        n_feat = int(round(n_core * rng.uniform(0.25, 0.5)))
        words = [features[i] for i in rng.choice(len(features), n_feat, False, feature_p)]
        words += core_words.take(n_core - n_feat)
        base_core[b] = [words[i] for i in rng.permutation(len(words))]
        brands = [
            real_brands[i]
            for i in rng.choice(len(real_brands), int(rng.integers(3, 11)), False, brand_p)
        ]
        brands += [w for w, _ in brand_words.take(int(rng.integers(3, 13)))]
        base_brands[b] = [brands[i] for i in rng.permutation(len(brands))]

    names: list[str] = []
    heads: list[tuple[str, str]] = []
    cores: list[list[tuple[str, str]]] = []
    brand_lists: list[list[str]] = []
    seen: dict[str, int] = {}
    for b, m in combos:
        en, es, pt = bases[b]
        core, brands = base_core[b], base_brands[b]
        if m >= 0:
            men, mes, mpt = mods[m]
            en, es, pt = f"{men}_{en}", f"{es} {_agree(mes, es)}", f"{pt} {_agree(mpt, pt)}"
            keep = (rng.random(len(core)) < 0.7).tolist()
            core = [w for w, k in zip(core, keep, strict=True) if k]
            core += core_words.take(int(rng.integers(10, 41))) + [(mes, mpt)]
            core = [core[i] for i in rng.permutation(len(core))][:200]
            brands = brands + [w for w, _ in brand_words.take(int(rng.integers(1, 6)))]
        seen[en] = seen.get(en, 0) + 1
        names.append(en if seen[en] == 1 else f"{en}_{seen[en]}")
        heads.append((es, pt))
        cores.append(core)
        brand_lists.append(brands)
    return names, heads, cores, brand_lists


def _string_variants(length: np.ndarray, variants: tuple[list[bytes], ...]) -> pa.StringArray:
    """One string array of every variant of the entries, bare and with a trailing space.

    All variants of an entry have the same byte length (checked), so entry ``i`` of
    variant ``k`` (``2 * case + spaced``) is string ``k * len(length) + i``.
    """
    datas, lengths = [], []
    for variant in variants:
        if any(len(x) != n for x, n in zip(variant, length.tolist(), strict=True)):
            raise ValueError("case variants must keep the byte length of every entry")
        datas += [b"".join(variant), b" ".join(variant) + b" "]
        lengths += [length, length + 1]
    all_lengths = np.concatenate(lengths)
    offsets = np.zeros(all_lengths.size + 1, dtype=np.int32)
    np.cumsum(all_lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(
        all_lengths.size, pa.py_buffer(offsets), pa.py_buffer(b"".join(datas))
    )


@lru_cache(maxsize=4)
def _build_vocab(seed: int, categories: int) -> _Vocab:
    rng = np.random.default_rng([seed, 0x5EED, categories])
    pb = _PoolBuilder()
    space_id, empty_id = pb.add(" "), pb.add("")
    sep_ids = np.array([pb.add(s) for s, _, _ in _SEPARATORS], dtype=np.int64)
    end_sep_ids = np.array([pb.add(s) for s, _, _ in _END_SEPARATORS], dtype=np.int64)
    letter_ids = np.array([pb.add(ch) for ch in _LETTERS], dtype=np.int64)
    digit_ids = np.array([pb.add(ch) for ch in _DIGITS], dtype=np.int64)
    syllable_ids = np.array([pb.add(s) for s in _BRAND_SYLLABLES], dtype=np.int64)
    brand_ending_ids = np.array([pb.add(s) for s in _BRAND_ENDINGS], dtype=np.int64)

    # Language-specific word tables (connectors, generic words, prefixes, numbers).
    tables: list[np.ndarray] = []
    for text, a, shift in ((_CONNECTORS, 1.1, 1.0), (_GENERIC, 0.8, 3.0),
                           (_PREFIXES, 1.0, 1.0)):  # fmt: skip
        items = _pairs(text)
        lut = _lut(_zipf_weights(len(items), a, shift), _TABLE_BITS)
        for lang in (0, 1):
            ids = np.array([pb.add_folded(pair[lang]) for pair in items], dtype=np.int64)
            tables.append(ids[lut])
    for lang in (0, 1):
        texts, weights = _numbers(lang)
        ids = np.array([pb.add_folded(t) for t in texts], dtype=np.int64)
        tables.append(ids[_lut(weights, _TABLE_BITS)])
    type_table = np.full(8, -1, dtype=np.int64)
    for k, t in enumerate(_TABLE_TYPES):
        type_table[t] = k

    names, heads, cores, brand_lists = _category_lists(rng, categories)
    head_ids = np.array([[pb.add_folded(h[lang]) for h in heads] for lang in (0, 1)],
                        dtype=np.int64).reshape(-1)  # fmt: skip
    pair_ids: dict[tuple[str, str], tuple[int, int, int]] = {}
    core_rows = []
    for core in cores:
        for pair in core:
            found = pair_ids.get(pair)
            if found is None:
                es, pt = pair
                ascii_es = es.translate(_ACCENT_FOLD).split(" ")[-1]
                found = pair_ids[pair] = (pb.add_folded(es), pb.add_folded(pt), pb.add(ascii_es))
            core_rows.append(found)
    core_arr = np.array(core_rows, dtype=np.int64).reshape(-1, 3)
    core_len = np.array([len(c) for c in cores], dtype=np.int64)
    core_ptr = np.cumsum(core_len) - core_len
    brand_len = np.array([len(b) for b in brand_lists], dtype=np.int64)
    brand_ptr = np.cumsum(brand_len) - brand_len
    brand_ids = np.array([pb.add_folded(x) for bl in brand_lists for x in bl], dtype=np.int64)

    cat_w = 1.0 / (np.arange(categories) + max(1.0, categories / 40.0))
    cat_lut = rng.permutation(categories)[_lut(cat_w, _CAT_BITS)]
    round_robin = rng.permutation(categories)

    # ---- strings ------------------------------------------------------------------------
    items = pb.items
    encoded = [x.encode() for x in items]
    length = np.array([len(x) for x in encoded], dtype=np.int64)
    strings = _string_variants(
        length,
        (encoded, [_title_case(x).encode() for x in items], [x.upper().encode() for x in items]),
    )
    # Lower-cased \W+ tokens of every entry; most entries are one token, their own id.
    atom_index = dict(pb.ids)
    atom_lists = [[i] for i in range(len(items))]
    for i, x in enumerate(items):
        if not x.isalnum():
            atom_lists[i] = [
                atom_index.setdefault(a, len(atom_index)) for a in _TOKEN_SPLIT.split(x) if a
            ]
    atom_len = np.array([len(a) for a in atom_lists], dtype=np.int64)
    atom_ptr = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(atom_len, out=atom_ptr[1:])
    fold = _ACCENT_FOLD
    return _Vocab(
        n_static=len(items),
        strings=strings,
        lower_pool=np.frombuffer(b"".join(encoded), dtype=np.uint8),
        off=np.cumsum(length) - length,
        length=length,
        words=np.array([len(x.split()) for x in items], dtype=np.int8),
        folded=np.array(
            [i if x.isascii() else pb.ids.get(x.translate(fold), i) for i, x in enumerate(items)],
            dtype=np.int64,
        ),  # fmt: skip
        atom_ptr=atom_ptr,
        atoms=list(atom_index),
        atom_ids=np.fromiter(itertools.chain.from_iterable(atom_lists), dtype=np.int64),
        one_word_id=int(letter_ids[0]),
        space_id=space_id,
        empty_id=empty_id,
        sep_ids=sep_ids,
        sep_words=np.array([w for _, w, _ in _SEPARATORS], dtype=np.int8),
        sep_lut=_lut([p for _, _, p in _SEPARATORS]),
        end_sep_ids=end_sep_ids,
        end_sep_lut=_lut([p for _, _, p in _END_SEPARATORS]),
        slot_lut=_lut(_SLOT_PMF) + _MIN_SLOTS,
        case_lut=_lut(_CASE_PMF),
        type_lut=np.stack(
            [
                np.array([t for t, _ in spec])[_lut([p for _, p in spec])]
                for spec in (_FIRST_SLOT, _OTHER_SLOT)
            ]
        ),  # fmt: skip
        type_table=type_table,
        table_lut=np.concatenate(tables),
        pow_lut=((np.arange(2**_LUT_BITS) + 0.5) / 2**_LUT_BITS) ** 1.6,
        names=pa.array(names, type=pa.string()),
        cat_lut=cat_lut,
        round_robin=round_robin,
        head_ids=head_ids,
        core_ptr=core_ptr,
        core_len=core_len,
        core_ids=np.concatenate([core_arr[:, 0], core_arr[:, 1]]),
        core_ascii=core_arr[:, 2],
        brand_ptr=brand_ptr,
        brand_len=brand_len,
        brand_ids=brand_ids,
        letter_ids=letter_ids,
        digit_ids=digit_ids,
        syllable_ids=syllable_ids,
        brand_ending_ids=brand_ending_ids,
    )


# ---------------------------------------------------------------------------------------
# Row generation.

_U64 = np.uint64
_M16 = _U64(0xFFFF)


def _bits(x: np.ndarray, shift: int, nbits: int) -> np.ndarray:
    """``nbits`` bits of uint64 words from bit ``shift`` on, as intp indices."""
    return ((x >> _U64(shift)) & _U64((1 << nbits) - 1)).astype(np.intp)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, element-wise on uint64 arrays (wrapping arithmetic)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _gather(pool: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``pool[s:s + n]`` for every (s, n) pair, without a Python loop."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=pool.dtype)
    out_start = np.cumsum(lengths) - lengths
    idx = np.repeat(starts - out_start, lengths)
    idx += np.arange(total, dtype=idx.dtype)
    return pool[idx]


def _heaps_d(t: np.ndarray) -> np.ndarray:
    """Number of novel ids of a category after ``t`` novel slots."""
    return np.minimum(t, np.floor(HEAPS_K * t**HEAPS_BETA))


def _novel_strings(v: _Vocab, seed: int, cats: np.ndarray, ids: np.ndarray) -> pa.StringArray:
    """Text of the novel tokens ``(category, id)``: model codes, pseudo-brands, typos.

    Returns ``3 * len(cats)`` strings: all lower case, then Title case, then UPPER case.
    """
    m = cats.size
    salt = _splitmix64(np.array([seed], dtype=_U64))
    h1 = _splitmix64(((cats.astype(_U64) << _U64(32)) | ids.astype(_U64)) ^ salt)
    h2 = _splitmix64(h1 ^ _U64(0xD1B54A32D192ED03))
    h3 = _splitmix64(h2 ^ _U64(0x8CB92BA72F3D8DD7))
    kind = (h1 % _U64(100)).astype(np.intp)
    width = 9
    cols = np.arange(width)
    ucols = cols.astype(_U64)
    seg_start = np.zeros((m, width), dtype=np.int64)
    seg_len = np.zeros((m, width), dtype=np.int64)
    off, length = v.off, v.length

    def put(mask: np.ndarray, entry: np.ndarray, col: slice | int = slice(None)) -> None:
        seg_start[:, col] = np.where(mask, off[entry], seg_start[:, col])
        seg_len[:, col] = np.where(mask, length[entry], seg_len[:, col])

    # Model codes (50 %): 1-3 letters, 2-5 digits and sometimes a trailing letter.
    model = kind < 50
    n_letters = np.array([1, 1, 1, 2, 2, 2, 2, 2, 3, 3])[_bits(h1, 8, 8) % 10]
    n_digits = _bits(h1, 16, 2) + 2
    tail = _bits(h1, 20, 3) == 0
    letters = v.letter_ids[((h2[:, None] >> (_U64(5) * ucols)) % _U64(26)).astype(np.intp)]
    digits = v.digit_ids[((h3[:, None] // _U64(10) ** ucols) % _U64(10)).astype(np.intp)]
    is_letter = cols < n_letters[:, None]
    is_digit = ~is_letter & (cols < (n_letters + n_digits)[:, None])
    is_tail = (cols == (n_letters + n_digits)[:, None]) & tail[:, None]
    put((is_letter | is_digit | is_tail) & model[:, None],
        np.where(is_digit, digits, letters))  # fmt: skip

    # Pseudo-brands (22 %): 2-4 syllables and sometimes a brand-like ending.
    brand = (kind >= 50) & (kind < 72)
    n_syl = np.array([2, 2, 2, 3, 3, 3, 3, 3, 4, 4])[_bits(h1, 24, 8) % 10]
    syl = v.syllable_ids[
        ((h2[:, None] >> (_U64(8) * ucols[:4])) % _U64(v.syllable_ids.size)).astype(np.intp)
    ]
    put((cols[:4] < n_syl[:, None]) & brand[:, None], syl, slice(0, 4))
    ending = v.brand_ending_ids[(h3 % _U64(v.brand_ending_ids.size)).astype(np.intp)]
    put(brand & (_bits(h1, 32, 8) % 3 == 0), ending, 4)

    # Typos (28 %) of the accent-free spanish form of one of the category's core words:
    # a letter deleted, doubled, swapped with the next one or replaced.
    typo = kind >= 72
    word = v.core_ascii[v.core_ptr[cats] + (h2 % v.core_len[cats].astype(_U64)).astype(np.intp)]
    ws, wl = off[word], length[word]
    op = _bits(h1, 40, 8) % 4
    p = np.minimum((h3 % np.maximum(wl - 1, 1).astype(_U64)).astype(np.int64),
                   np.maximum(wl - 2, 0))  # fmt: skip
    delete, double, swap, replace = op == 0, op == 1, op == 2, op == 3
    letter = off[v.letter_ids[_bits(h2, 40, 8) % 26]]
    pieces = (
        (ws, np.where(double, p + 1, p)),
        (np.select([double, replace], [ws + p, letter], ws + p + 1),
         np.select([delete, double, swap], [wl - p - 1, wl - p, np.minimum(1, wl - p - 1)], 1)),
        (ws + p, np.where(swap, np.minimum(1, wl - p), 0)),
        (np.where(swap, ws + p + 2, ws + p + 1),
         np.select([swap, replace], [np.maximum(wl - p - 2, 0), np.maximum(wl - p - 1, 0)], 0)),
    )  # fmt: skip
    for col, (start, n) in enumerate(pieces):
        seg_start[:, col] = np.where(typo, start, seg_start[:, col])
        seg_len[:, col] = np.where(typo, n, seg_len[:, col])

    lower = _gather(v.lower_pool, seg_start.reshape(-1), seg_len.reshape(-1))
    tok_len = seg_len.sum(axis=1)
    size = int(tok_len.sum())
    starts = np.cumsum(tok_len) - tok_len
    is_lower = (lower >= 97) & (lower <= 122)
    upper = np.where(is_lower, lower - 32, lower).astype(np.uint8)
    title = lower.copy()
    title[starts] = upper[starts]
    offsets = np.empty(3 * m + 1, dtype=np.int32)
    offsets[:-1] = (starts[None, :] + size * np.arange(3)[:, None]).reshape(-1)
    offsets[-1] = 3 * size
    data = np.concatenate([lower, title, upper])
    return pa.StringArray.from_buffers(3 * m, pa.py_buffer(offsets), pa.py_buffer(data))


@dataclass
class _State:
    """What carries over from one chunk to the next."""

    novel_seen: np.ndarray  # novel slots drawn so far, per category
    cat_rows: np.ndarray  # rows written so far, per category
    used: np.ndarray  # static entries used so far
    novel_texts: list[pa.Array]  # lower-case text of the novel ids created so far


def _random_words(
    v: _Vocab, seed: int, row0: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random words of rows ``[row0, row0 + n)``: one random stream per 4,096-row block.

    Returns two uint64 words per row, the number of slots of each row and two uint64
    words per slot.
    """
    row_words, slot_counts, slot_words = [], [], []
    for b in range(row0 // BLOCK_ROWS, -(-(row0 + n) // BLOCK_ROWS)):
        nb = min(BLOCK_ROWS, row0 + n - b * BLOCK_ROWS)
        bg = np.random.PCG64(np.random.SeedSequence([seed, b]))
        rw = bg.random_raw(2 * nb).reshape(nb, 2)
        n_slots = v.slot_lut[_bits(rw[:, 1], 40, 16)]
        row_words.append(rw)
        slot_counts.append(n_slots)
        slot_words.append(bg.random_raw(2 * int(n_slots.sum())).reshape(-1, 2))
    return np.concatenate(row_words), np.concatenate(slot_counts), np.concatenate(slot_words)


def _make_chunk(v: _Vocab, state: _State, seed: int, row0: int, n: int) -> pa.Table:
    """Generate rows ``[row0, row0 + n)`` as a table of four string columns."""
    rw, n_slots, sw = _random_words(v, seed, row0, n)
    r0, r1, s0, s1 = rw[:, 0], rw[:, 1], sw[:, 0], sw[:, 1]
    n_cats = len(v.names)

    # ---- rows -----------------------------------------------------------------------
    cat = v.cat_lut[_bits(r0, 64 - _CAT_BITS, _CAT_BITS)]
    rr_rows = np.arange(-(-row0 // ROUND_ROBIN_EVERY) * ROUND_ROBIN_EVERY, row0 + n,
                        ROUND_ROBIN_EVERY)  # fmt: skip
    cat[rr_rows - row0] = v.round_robin[(rr_rows // ROUND_ROBIN_EVERY) % n_cats]
    lang = _bits(r1, 0, 1)
    reliable = _bits(r1, 1, 16) < int(RELIABLE_SHARE * 2**16)
    case = v.case_lut[_bits(r1, 17, 16)]

    # ---- slot types -----------------------------------------------------------------
    total = int(n_slots.sum())
    row_start = np.cumsum(n_slots) - n_slots
    row_of = np.repeat(np.arange(n), n_slots)
    type_bits = _bits(s0, 0, 16)
    types = v.type_lut[1][type_bits]
    types[row_start] = v.type_lut[0][type_bits[row_start]]
    second = row_start + 1  # the head comes first or second
    types[second] = np.where(types[row_start] == _HEAD, types[second], _HEAD)
    conn = types == _CONN
    types[1:][conn[1:] & conn[:-1]] = _GEN  # no two connectors in a row
    last = row_start + n_slots - 1
    types[last] = np.where(types[last] == _CONN, _CORE, types[last])

    # ---- static words ---------------------------------------------------------------
    slot_lang = lang[row_of]
    slot_cat = cat[row_of]
    ids = np.full(total, v.one_word_id, dtype=np.int64)
    table = v.type_table[types]
    m = table >= 0
    ids[m] = v.table_lut[((table[m] * 2 + slot_lang[m]) << _TABLE_BITS) | _bits(s0[m], 32, 18)]
    m = types == _HEAD
    ids[m] = v.head_ids[slot_lang[m] * n_cats + slot_cat[m]]
    for kind, ptr, size, pool, per_lang in (
        (_CORE, v.core_ptr, v.core_len, v.core_ids, v.core_ascii.size),
        (_BRAND, v.brand_ptr, v.brand_len, v.brand_ids, 0),
    ):
        m = np.flatnonzero(types == kind)
        c = slot_cat[m]
        pick = (size[c] * v.pow_lut[_bits(s0[m], 16, 16)]).astype(np.int64)
        ids[m] = pool[slot_lang[m] * per_lang + ptr[c] + pick]
    drop = _bits(s1, 0, 16) < int(ACCENT_DROP * 2**16)
    ids[drop] = v.folded[ids[drop]]
    novel = types == _NOVEL
    sep_kind = v.sep_lut[_bits(s0, 48, 16)]

    # ---- at most MAX_WORDS words: empty the slots past the cap ----------------------
    tok_words = v.words[ids]
    slot_words = tok_words + v.sep_words[sep_kind]
    over = np.flatnonzero(np.add.reduceat(slot_words, row_start, dtype=np.int64) > MAX_WORDS)
    cut = np.empty(0, dtype=np.int64)
    if over.size:
        sub_n = n_slots[over]
        first = np.cumsum(sub_n) - sub_n
        sub = np.repeat(row_start[over] - first, sub_n) + np.arange(int(sub_n.sum()))
        w = slot_words[sub].astype(np.int64)
        cum = np.cumsum(w)
        before = cum - w - np.repeat(cum[first] - w[first], sub_n)
        keep = before + tok_words[sub] <= MAX_WORDS
        cut = sub[~keep]
        ids[cut] = v.empty_id
        novel[cut] = False
        last[over] = row_start[over] + np.add.reduceat(keep, first, dtype=np.int64) - 1

    # ---- novel tokens: a Heaps' law stream of ids per category ----------------------
    nov = np.flatnonzero(novel)
    nov_cat = slot_cat[nov]
    order = np.argsort(nov_cat, kind="stable")
    in_order = nov_cat[order]
    within = np.empty(nov.size, dtype=np.int64)
    within[order] = np.arange(nov.size) - np.searchsorted(in_order, in_order, side="left")
    t = (state.novel_seen[nov_cat] + within + 1).astype(np.float64)
    d_prev = _heaps_d(t - 1)
    reuse = _bits(s1[nov], 16, 32) * (1.0 / 2**32)
    is_new = _heaps_d(t) > d_prev
    nov_id = np.where(is_new, d_prev, np.floor(d_prev * reuse * reuse))
    state.novel_seen += np.bincount(nov_cat, minlength=n_cats)
    uniq, inverse = np.unique((nov_cat << 32) | nov_id.astype(np.int64), return_inverse=True)
    dyn = _novel_strings(v, seed, uniq >> 32, uniq & 0xFFFFFFFF)
    created = np.unique(inverse[is_new])
    state.novel_texts.append(dyn.take(pa.array(created)))

    # ---- strings: pyarrow takes the pieces, rows are runs of pieces -----------------
    variant = np.asarray(_CASE_VARIANT)[case]
    sentence = row_start[case == 1]
    variant = variant[row_of]
    variant[sentence] = 1
    sep_id = v.sep_ids[sep_kind]
    sep_id[cut] = v.empty_id
    sep_id[last] = v.end_sep_ids[v.end_sep_lut[_bits(s0[last], 48, 16)]]
    spaced = (sep_id == v.space_id) & ~novel  # the word's " " variant takes the separator
    need_sep = ~spaced & (sep_id != v.empty_id)
    pieces = np.empty(2 * total, dtype=np.int64)
    pieces[0::2] = (variant * 2 + spaced) * v.n_static + ids
    pieces[0::2][nov] = 6 * v.n_static + variant[nov] * uniq.size + inverse
    pieces[1::2] = sep_id
    keep_piece = np.ones(2 * total, dtype=bool)
    keep_piece[1::2] = need_sep
    pieces = pieces[keep_piece]
    row_end = np.cumsum(np.add.reduceat(need_sep.astype(np.int64) + 1, row_start))
    taken = pa.concat_arrays([v.strings, dyn]).take(pa.array(pieces.astype(np.int32)))
    piece_offsets = np.frombuffer(taken.buffers()[1], dtype=np.int32, count=len(taken) + 1)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = piece_offsets[row_end]
    titles = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), taken.buffers()[2])

    state.used[ids[~novel]] = True
    state.cat_rows += np.bincount(cat, minlength=n_cats)
    return pa.table(
        {
            "title": titles,
            "label_quality": pa.array(LABEL_QUALITIES).take(pa.array(reliable.view(np.int8))),
            "language": pa.array(LANGUAGES).take(pa.array(lang.astype(np.int8))),
            "category": v.names.take(pa.array(cat.astype(np.int32))),
        }
    )


@contextmanager
def _open_sink(path: Path) -> Iterator[BinaryIO | pa.NativeFile]:
    if path.name.endswith(".gz"):
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0
            ) as gz,
        ):
            yield gz
    else:
        with pa.OSFile(str(path), "wb") as f:
            yield f


def write_synthetic_titles(
    path: str | Path,
    rows: int,
    *,
    seed: int = 0,
    categories: int = 1588,
    chunk_rows: int = 200_000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write ``rows`` synthetic MercadoLibre-style titles to a CSV file.

    The file has the header ``title,label_quality,language,category`` (see the module
    docstring for the model of the data) and is gzip-compressed when ``path`` ends with
    ``.gz``.  Rows are generated ``chunk_rows`` at a time (rounded up to a multiple of
    4,096, at most 1,048,576; internally 65,536 at a time) and streamed through
    :class:`pyarrow.csv.CSVWriter` from a background thread, so memory stays bounded
    whatever ``rows`` is.  pyarrow quotes every value (its "needed" style), so titles
    with commas round-trip.

    Args:
        path: output file; missing parent directories are created.
        rows: number of data rows.
        seed: the vocabulary, the categories and the rows are functions of the seed; the
            same arguments give a byte-identical file.
        categories: number of categories (1,588 in the real data).
        chunk_rows: rows generated per chunk; does not change the output.
        progress: called with the number of rows written so far after each chunk.

    Returns:
        ``{"rows", "categories", "distinct_tokens", "seconds", "bytes"}``:
        ``categories`` is the number of distinct categories written, ``distinct_tokens``
        the exact number of distinct lower-cased tokens of the titles (split on ``\\W+``),
        ``seconds`` the wall time and ``bytes`` the file size.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if categories < 1:
        raise ValueError(f"categories must be >= 1, got {categories}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    seed = int(seed) % 2**63
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    v = _build_vocab(seed, categories)
    state = _State(
        novel_seen=np.zeros(categories, dtype=np.int64),
        cat_rows=np.zeros(categories, dtype=np.int64),
        used=np.zeros(v.n_static, dtype=bool),
        novel_texts=[],
    )
    step = min(-(-chunk_rows // BLOCK_ROWS) * BLOCK_ROWS, MAX_CHUNK_ROWS)
    schema = pa.schema([(name, pa.string()) for name in COLUMNS])
    with _open_sink(path) as sink, ThreadPoolExecutor(max_workers=1) as pool:
        sink.write((",".join(COLUMNS) + "\n").encode())
        writer = pacsv.CSVWriter(
            sink, schema, write_options=pacsv.WriteOptions(include_header=False)
        )
        pending: Future | None = None
        written = 0
        for row0 in range(0, rows, step):
            end = min(row0 + step, rows)
            table = pa.concat_tables(
                _make_chunk(v, state, seed, start, min(GEN_ROWS, end - start))
                for start in range(row0, end, GEN_ROWS)
            )
            if pending is not None:
                pending.result()
                if progress is not None:
                    progress(written)
            pending = pool.submit(writer.write_table, table)
            written = row0 + table.num_rows
        if pending is not None:
            pending.result()
            if progress is not None:
                progress(written)
        writer.close()

    return {
        "rows": rows,
        "categories": int(np.count_nonzero(state.cat_rows)),
        "distinct_tokens": _distinct_tokens(v, state),
        "seconds": time.perf_counter() - started,
        "bytes": path.stat().st_size,
    }


def _distinct_tokens(v: _Vocab, state: _State) -> int:
    """Distinct lower-cased ``\\W+`` tokens of the titles written (exact)."""
    used = np.flatnonzero(state.used)
    starts, ends = v.atom_ptr[used], v.atom_ptr[used + 1]
    atom_ids = np.unique(_gather(v.atom_ids, starts, ends - starts))
    static = pa.array([v.atoms[i] for i in atom_ids.tolist()], type=pa.string())
    return int(
        pc.count_distinct(pa.chunked_array([static, *state.novel_texts], pa.string())).as_py()
    )


def main(argv: list[str] | None = None) -> None:
    """`python benchmarks/synth.py --rows N --output FILE [--seed S] [--categories C]`."""
    import argparse
    import json

    from rich.progress import Progress

    parser = argparse.ArgumentParser(description="Write synthetic MercadoLibre-style titles.")
    parser.add_argument("--rows", "-n", type=int, required=True, help="rows to write")
    parser.add_argument("--output", "-o", type=Path, required=True, help=".csv or .csv.gz")
    parser.add_argument("--seed", type=int, default=0, help="the same seed, the same file")
    parser.add_argument("--categories", type=int, default=1588, help="number of categories")
    args = parser.parse_args(argv)
    with Progress(transient=True) as bar:  # on stderr, so stdout carries the summary alone
        task = bar.add_task(f"writing {args.output.name}", total=args.rows)
        summary = write_synthetic_titles(
            args.output,
            args.rows,
            seed=args.seed,
            categories=args.categories,
            progress=lambda n: bar.update(task, completed=n),
        )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
