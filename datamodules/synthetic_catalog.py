"""The fixed vocabulary and weights of the synthetic store (datamodules/synthetic.py draws from them): the category
tree with each subcategory's product types in purchase order, related subcategories, audiences, price tiers, brand
and series name parts, and the weights of the item-to-item transition structure.

Changing any value changes the generated dataset: bump ``GENERATOR_VERSION`` in synthetic.py when you do."""
from __future__ import annotations

import numpy as np

# (top category, [(subcategory, product types in purchase order, attributes, specifications), ...]).
# attributes[j] is the usual attribute of product type j (drawn for most of its items, any other for the rest).
CATALOG: tuple[tuple[str, tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...]], ...] = (
    ("Musical Instruments", (
        ("Guitars",
         ("Acoustic Guitar", "Guitar Strings", "Guitar Picks", "Clip-On Tuner", "Guitar Capo", "Guitar Strap"),
         ("Spruce Top", "Phosphor Bronze", "Celluloid", "Chromatic", "Quick-Release", "Padded Leather"),
         ("Black", "Natural", "Sunburst", "3-Pack", "Standard Size")),
        ("Keyboards & Pianos",
         ("Digital Piano", "Portable Keyboard", "Sustain Pedal", "Keyboard Stand", "Piano Bench", "Dust Cover"),
         ("88-Key Weighted", "61-Key", "Half-Damper", "X-Style", "Adjustable Padded", "Stretch Velvet"),
         ("Black", "Rosewood", "White", "Foldable", "Universal Fit")),
        ("Drums & Percussion",
         ("Snare Drum", "Drumsticks", "Crash Cymbal", "Drum Throne", "Practice Pad", "Drum Heads"),
         ("Maple Shell", "Hickory", "B20 Bronze", "Memory Foam", "Gum Rubber", "Coated"),
         ("14 Inch", "Pair", "16 Inch", "Black", "12 Inch")),
        ("Amplifiers & Effects",
         ("Guitar Amplifier", "Overdrive Pedal", "Delay Pedal", "Patch Cables", "Pedal Power Supply", "Pedalboard"),
         ("Tube", "Analog", "Tap-Tempo", "Low-Profile", "Isolated", "Aluminum"),
         ("20 Watt", "Compact", "6-Pack", "9V", "with Carry Bag")),
        ("Studio & Recording",
         ("Condenser Microphone", "Audio Interface", "Studio Headphones", "XLR Cable", "Pop Filter",
          "Microphone Stand"),
         ("Cardioid", "USB-C", "Closed-Back", "Balanced", "Dual-Layer", "Boom Arm"),
         ("Black", "10 ft", "2-Channel", "with Shock Mount", "Studio Pack")),
    )),
    ("Beauty & Personal Care", (
        ("Skin Care",
         ("Facial Cleanser", "Hydrating Toner", "Vitamin C Serum", "Face Moisturizer", "Mineral Sunscreen",
          "Eye Cream"),
         ("Gentle Foaming", "Hyaluronic Acid", "Brightening", "Ceramide", "Broad-Spectrum", "Retinol"),
         ("1 fl oz", "1.7 oz", "for Sensitive Skin", "8 fl oz", "Fragrance-Free")),
        ("Hair Care",
         ("Shampoo", "Conditioner", "Hair Mask", "Hair Oil", "Styling Cream", "Detangling Brush"),
         ("Sulfate-Free", "Argan Oil", "Keratin", "Coconut", "Anti-Frizz", "Flexible Bristle"),
         ("12 fl oz", "for Curly Hair", "for Dry Hair", "2-Pack", "Salon Size")),
        ("Makeup",
         ("Liquid Foundation", "Concealer", "Volumizing Mascara", "Matte Lipstick", "Makeup Brush Set",
          "Setting Spray"),
         ("Full-Coverage", "Creamy", "Waterproof", "Long-Wear", "Vegan", "Oil-Control"),
         ("Medium Beige", "Nude", "Black", "Ruby Red", "Fair")),
        ("Fragrance",
         ("Eau de Parfum", "Eau de Toilette", "Body Mist", "Travel Atomizer", "Scented Body Lotion"),
         ("Floral", "Citrus", "Vanilla", "Refillable", "Amber"),
         ("1.7 fl oz", "3.4 fl oz", "Gift Set", "8 fl oz", "Travel Size")),
        ("Nail Care",
         ("Nail Polish", "Base Coat", "Gel Top Coat", "Glass Nail File", "Cuticle Oil"),
         ("Quick-Dry", "Strengthening", "High-Shine", "Crystal", "Jojoba"),
         ("0.5 fl oz", "Coral", "Clear", "3-Pack", "Nude Pink")),
    )),
    ("Sports & Outdoors", (
        ("Camping & Hiking",
         ("Backpacking Tent", "Sleeping Bag", "Sleeping Pad", "LED Headlamp", "Camp Stove", "Water Filter"),
         ("Ultralight", "Mummy", "Insulated", "Rechargeable", "Compact", "Hollow-Fiber"),
         ("2-Person", "Olive Green", "Orange", "Regular", "Backpacking")),
        ("Cycling",
         ("Hybrid Bike", "Bike Helmet", "Bike Light Set", "Bike Lock", "Inner Tubes", "Cycling Gloves"),
         ("Aluminum", "MIPS", "USB Rechargeable", "Hardened Steel", "Presta Valve", "Gel-Padded"),
         ("700c", "Medium", "2-Pack", "Matte Black", "Large")),
        ("Fitness",
         ("Yoga Mat", "Adjustable Dumbbells", "Resistance Bands", "Foam Roller", "Jump Rope", "Workout Gloves"),
         ("Non-Slip", "Quick-Select", "Latex-Free", "High-Density", "Speed", "Breathable"),
         ("6mm", "Set of 5", "Pair", "18 Inch", "Purple")),
        ("Fishing",
         ("Spinning Rod", "Spinning Reel", "Braided Fishing Line", "Lure Kit", "Tackle Box", "Fishing Pliers"),
         ("Carbon Fiber", "Smooth-Drag", "Low-Visibility", "Freshwater", "Waterproof", "Stainless Steel"),
         ("7 ft", "Size 2500", "20 lb Test", "Saltwater", "56-Piece")),
        ("Team Sports",
         ("Soccer Ball", "Shin Guards", "Basketball", "Ball Pump", "Sports Duffel Bag", "Goalkeeper Gloves"),
         ("Official Size", "Lightweight", "Composite Leather", "Dual-Action", "Water-Resistant", "Latex Palm"),
         ("Size 5", "Youth", "Medium", "Blue", "Adult")),
    )),
    ("Home & Kitchen", (
        ("Cookware",
         ("Cast Iron Skillet", "Stainless Saucepan", "Dutch Oven", "Silicone Spatula Set", "Pot Holders",
          "Splatter Screen"),
         ("Pre-Seasoned", "Tri-Ply", "Enameled", "Heat-Resistant", "Quilted Cotton", "Fine Mesh"),
         ("10 Inch", "3 Quart", "6 Quart", "Set of 4", "Red")),
        ("Coffee & Tea",
         ("Burr Coffee Grinder", "Pour-Over Dripper", "Paper Coffee Filters", "Gooseneck Kettle", "Ceramic Mug",
          "Tea Infuser"),
         ("Conical", "Glass", "Unbleached", "Electric", "Double-Walled", "Stainless Steel"),
         ("Size 02", "100 Count", "1 Liter", "12 oz", "Matte White")),
        ("Bedding",
         ("Duvet Cover Set", "Memory Foam Pillow", "Sheet Set", "Mattress Protector", "Weighted Blanket"),
         ("Organic Cotton", "Cooling Gel", "Bamboo", "Waterproof", "Glass Bead"),
         ("Queen", "King", "Twin", "Light Grey", "Navy")),
        ("Storage & Organization",
         ("Fabric Storage Bins", "Drawer Organizer", "Closet Shelf Divider", "Label Maker", "Over-the-Door Rack"),
         ("Collapsible", "Bamboo", "Clear Acrylic", "Bluetooth", "Expandable"),
         ("Set of 6", "Beige", "Large", "White", "Grey")),
        ("Cleaning Supplies",
         ("Cordless Vacuum", "Vacuum Filter", "Microfiber Cloths", "Spray Mop", "Mop Refill Pads"),
         ("Lightweight", "HEPA", "Lint-Free", "Refillable", "Washable"),
         ("24-Pack", "2-Pack", "Grey", "Blue", "with Wall Mount")),
    )),
    ("Electronics", (
        ("Computer Accessories",
         ("Mechanical Keyboard", "Keycap Set", "Wireless Mouse", "Mouse Pad", "USB-C Hub", "Laptop Stand"),
         ("Hot-Swappable", "PBT", "Ergonomic", "Extended", "7-in-1", "Aluminum"),
         ("Black", "Silver", "Tenkeyless", "Bluetooth", "White")),
        ("Cameras & Photo",
         ("Mirrorless Camera", "Prime Lens", "SD Memory Card", "Camera Bag", "Travel Tripod", "Lens Cleaning Kit"),
         ("4K", "50mm f/1.8", "UHS-II", "Weatherproof", "Carbon Fiber", "Anti-Static"),
         ("128GB", "Black", "Compact", "with Carry Case", "Kit")),
        ("Headphones & Audio",
         ("Over-Ear Headphones", "Wireless Earbuds", "Bluetooth Speaker", "Headphone Stand", "Replacement Ear Tips"),
         ("Noise-Cancelling", "True Wireless", "Waterproof", "Walnut", "Memory Foam"),
         ("Black", "Navy", "White", "Portable", "Small/Medium/Large")),
        ("Phone Accessories",
         ("Phone Case", "Screen Protector", "Charging Cable", "Fast Wall Charger", "Portable Power Bank",
          "Car Phone Mount"),
         ("Shockproof", "Tempered Glass", "Braided USB-C", "GaN 65W", "10000mAh", "Magnetic"),
         ("Clear", "2-Pack", "6 ft", "Black", "Slim")),
        ("Smart Home",
         ("Smart Speaker", "Smart Plug", "Smart LED Bulb", "Video Doorbell", "Indoor Security Camera"),
         ("Voice-Controlled", "Wi-Fi", "Color-Changing", "1080p", "Motion-Activated"),
         ("4-Pack", "White", "2nd Gen", "Night Vision", "Black")),
    )),
    ("Toys & Games", (
        ("Building Sets",
         ("Building Brick Set", "Baseplate", "Minifigure Pack", "Brick Storage Case", "Brick Separator Tool"),
         ("Space Station", "Green", "City", "Stackable", "Classic"),
         ("Ages 6+", "Ages 8+", "Large", "Set of 4", "Assorted")),
        ("Board Games",
         ("Strategy Board Game", "Expansion Pack", "Card Sleeves", "Dice Set", "Game Organizer Insert"),
         ("Cooperative", "Deck-Building", "Matte", "Polyhedral", "Foam Core"),
         ("2-4 Players", "Ages 10+", "100 Count", "Deluxe Edition", "Ages 14+")),
        ("Puzzles",
         ("Jigsaw Puzzle", "Puzzle Roll-Up Mat", "Puzzle Glue", "Puzzle Sorting Trays", "Brain Teaser Set"),
         ("Landscape", "Felt", "Clear-Drying", "Stackable", "Metal"),
         ("1000 Pieces", "500 Pieces", "Set of 6", "Ages 12+", "Large")),
        ("Arts & Crafts",
         ("Colored Pencils", "Sketchbook", "Watercolor Paint Set", "Paint Brushes", "Modeling Clay",
          "Craft Storage Tote"),
         ("Oil-Based", "Acid-Free", "Artist-Grade", "Synthetic", "Air-Dry", "Portable"),
         ("72 Colors", "9 x 12 Inch", "36 Colors", "Set of 10", "24 Colors")),
        ("Outdoor Play",
         ("Water Blaster", "Kite", "Bubble Machine", "Sidewalk Chalk", "Flying Disc"),
         ("Long-Range", "Easy-Fly", "Automatic", "Washable", "Glow-in-the-Dark"),
         ("2-Pack", "Rainbow", "Ages 3+", "Ages 5+", "Blue")),
    )),
)

# Related subcategories (undirected): cross-sells between them are common.
RELATED: tuple[tuple[str, str], ...] = (
    ("Guitars", "Amplifiers & Effects"), ("Guitars", "Studio & Recording"),
    ("Keyboards & Pianos", "Studio & Recording"), ("Drums & Percussion", "Studio & Recording"),
    ("Studio & Recording", "Headphones & Audio"),
    ("Skin Care", "Makeup"), ("Skin Care", "Fragrance"), ("Hair Care", "Fragrance"), ("Makeup", "Nail Care"),
    ("Camping & Hiking", "Fishing"), ("Camping & Hiking", "Cycling"), ("Cycling", "Fitness"),
    ("Team Sports", "Fitness"), ("Fitness", "Headphones & Audio"), ("Camping & Hiking", "Phone Accessories"),
    ("Cookware", "Coffee & Tea"), ("Cookware", "Cleaning Supplies"), ("Bedding", "Storage & Organization"),
    ("Storage & Organization", "Cleaning Supplies"), ("Coffee & Tea", "Smart Home"),
    ("Computer Accessories", "Phone Accessories"), ("Cameras & Photo", "Computer Accessories"),
    ("Headphones & Audio", "Phone Accessories"), ("Smart Home", "Headphones & Audio"),
    ("Building Sets", "Board Games"), ("Board Games", "Puzzles"), ("Arts & Crafts", "Building Sets"),
    ("Outdoor Play", "Arts & Crafts"),
)

TOP_AUDIENCE: dict[str, tuple[str, ...]] = {
    "Musical Instruments": ("beginners and gigging musicians", "home studios and stage use", "daily practice"),
    "Beauty & Personal Care": ("everyday routines", "all skin types", "a salon finish at home"),
    "Sports & Outdoors": ("weekend adventures", "training and competition", "all-weather use"),
    "Home & Kitchen": ("busy households", "small apartments and family homes", "everyday use"),
    "Electronics": ("work and travel", "home offices and commuting", "everyday carry"),
    "Toys & Games": ("kids and families", "game nights", "creative play"),
}

TIER_NAMES = ("budget", "mid-range", "premium")
TIER_ADJECTIVES: tuple[tuple[str, ...], ...] = (
    ("Essential", "Basic", "Everyday", "Value", "Starter"),
    ("Classic", "Standard", "Plus", "Select", "Performance"),
    ("Professional", "Premium", "Signature", "Deluxe", "Elite"),
)
TIER_PROBS = np.array([0.35, 0.45, 0.20])
# Affinity of a user of tier row for an item of tier column.
TIER_AFFINITY = np.array([[1.0, 0.45, 0.12], [0.45, 1.0, 0.45], [0.12, 0.45, 1.0]])

SERIES = ("Aria", "Nova", "Summit", "Pulse", "Terra", "Vista", "Echo", "Apex", "Orbit", "Haven", "Zen", "Core",
          "Flux", "Luma", "Atlas", "Motif")
BRAND_HEADS = ("Al", "Bel", "Cor", "Dar", "El", "Fen", "Gal", "Hal", "Ist", "Jun", "Kel", "Lor", "Mar", "Nor",
               "Or", "Pel", "Quin", "Ros", "Sol", "Tor", "Ul", "Vel", "Wyn", "Xan", "Yor", "Zel")
BRAND_TAILS = ("ton", "ora", "ex", "ix", "wood", "line", "ware", "craft", "dale", "mark", "ova", "ano", "ico",
               "stone", "field", "vo")

# Transition structure (weights of the candidate pools for an item's preferred successors).
NEXT_TYPE_WEIGHT = 1.0        # the next product type in the subcategory's purchase order
SECOND_NEXT_TYPE_WEIGHT = 0.5  # the one after
RELATED_PRIMARY_WEIGHT = 0.25  # primary products (first two types) of a related subcategory
SAME_TYPE_WEIGHT = 0.15        # an alternative of the same type
SAME_BRAND_BOOST = 3.0
SAME_TIER_BOOST = 1.5
PREFERRED_BRAND_BOOST = 4.0
NATIVE_ATTRIBUTE_P = 0.7      # probability that an item has its product type's usual attribute
SUCCESSOR_CONCENTRATION = 1.0  # Dirichlet concentration of an item's successor probabilities
